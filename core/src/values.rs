//! Attribute values and their renderings, each the byte-exact twin of the Python one it
//! replaces (schemas/values.py `COERCERS`, `to_copy_text`, `to_json_value` + orjson).
//! A value whose Python rendering this module cannot reproduce exactly is `Unsupported`:
//! the chunk then goes to the Python engine (see prototypes/rust_core.py).

use std::fmt::Write as _;
use std::rc::Rc;

use serde_json::Value as Json;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AttrType {
    String,
    Integer,
    Decimal,
    Float,
    Boolean,
    Timestamp,
    Date,
    Json,
}

impl AttrType {
    pub fn parse(name: &str) -> Option<AttrType> {
        Some(match name {
            "string" => AttrType::String,
            "integer" => AttrType::Integer,
            "decimal" => AttrType::Decimal,
            "float" => AttrType::Float,
            "boolean" => AttrType::Boolean,
            "timestamp" => AttrType::Timestamp,
            "date" => AttrType::Date,
            "json" => AttrType::Json,
            _ => return None,
        })
    }
}

/// An exact decimal as Python's `Decimal` holds it (coefficient and scale), at most 28 digits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Dec {
    pub coef: i128,
    pub scale: u32,
}

/// An aware timestamp: microseconds since the epoch (UTC) and the offset it was written with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ts {
    pub us: i64,
    pub offset_min: i32,
}

#[derive(Clone, Debug)]
pub enum Value {
    Str(Rc<str>),
    Int(i64),
    Dec(Dec),
    Float(f64),
    Bool(bool),
    Ts(Ts),
    Date(Rc<str>),
    Json(Rc<Json>),
}

/// Why a message or a chunk cannot be decided here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The message is invalid: the reason code of DESIGN section 2.
    Invalid(&'static str),
    /// Valid or not, only the Python decoder can say exactly (a shape this core does not render).
    Unsupported,
}

const MAX_DIGITS: u32 = 28;
const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

fn digits(value: i128) -> u32 {
    let magnitude = value.unsigned_abs();
    let mut n = 1;
    while n < 39 && magnitude >= POW10[n as usize] as u128 {
        n += 1;
    }
    n
}

impl Dec {
    /// Plain notation only (Python's `str` switches to exponents where adjusted < -6).
    fn checked(coef: i128, scale: u32) -> Result<Dec, Refusal> {
        let n = digits(coef);
        if n > MAX_DIGITS || (n as i64 - 1 - scale as i64) < -6 {
            return Err(Refusal::Unsupported);
        }
        Ok(Dec { coef, scale })
    }

    /// `[+-]digits[.digits]`, the form edge nodes send; anything else is the Python decoder's.
    pub fn parse(text: &str) -> Result<Dec, Refusal> {
        let bytes = text.as_bytes();
        let (negative, body) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            Some(b'+') => (false, &bytes[1..]),
            _ => (false, bytes),
        };
        let mut coef: i128 = 0;
        let mut scale = 0u32;
        let mut seen_point = false;
        let mut seen_digit = false;
        let mut digits_after = 0;
        for &b in body {
            match b {
                b'0'..=b'9' => {
                    if seen_point {
                        digits_after += 1;
                        scale += 1;
                    }
                    seen_digit = true;
                    coef = coef
                        .checked_mul(10)
                        .and_then(|c| c.checked_add((b - b'0') as i128))
                        .ok_or(Refusal::Unsupported)?;
                    if coef >= POW10[30] {
                        return Err(Refusal::Unsupported);
                    }
                }
                b'.' if !seen_point && seen_digit => seen_point = true,
                _ => {
                    // Decimal needs a digit: text without one (Inf and NaN are not finite) is invalid.
                    return Err(if text.is_ascii() && !bytes.iter().any(u8::is_ascii_digit) {
                        Refusal::Invalid("INVALID_ATTRIBUTE_VALUE")
                    } else {
                        Refusal::Unsupported
                    });
                }
            }
        }
        if !seen_digit || (seen_point && digits_after == 0) {
            return Err(if !bytes.iter().any(u8::is_ascii_digit) {
                Refusal::Invalid("INVALID_ATTRIBUTE_VALUE")
            } else {
                Refusal::Unsupported
            });
        }
        if negative && coef == 0 {
            return Err(Refusal::Unsupported); // "-0": Python keeps the sign
        }
        Dec::checked(if negative { -coef } else { coef }, scale)
    }

    pub fn add(self, other: Dec) -> Result<Dec, Refusal> {
        let scale = self.scale.max(other.scale);
        let a = self
            .coef
            .checked_mul(POW10[(scale - self.scale) as usize])
            .ok_or(Refusal::Unsupported)?;
        let b = other
            .coef
            .checked_mul(POW10[(scale - other.scale) as usize])
            .ok_or(Refusal::Unsupported)?;
        Dec::checked(a.checked_add(b).ok_or(Refusal::Unsupported)?, scale)
    }

    pub fn render(&self, out: &mut String) {
        let magnitude = match i64::try_from(self.coef.unsigned_abs()) {
            Ok(small) => {
                let mut text = String::with_capacity(20);
                push_int(&mut text, small);
                text
            }
            Err(_) => self.coef.unsigned_abs().to_string(),
        };
        if self.coef < 0 {
            out.push('-');
        }
        let scale = self.scale as usize;
        if scale == 0 {
            out.push_str(&magnitude);
        } else if magnitude.len() > scale {
            out.push_str(&magnitude[..magnitude.len() - scale]);
            out.push('.');
            out.push_str(&magnitude[magnitude.len() - scale..]);
        } else {
            out.push_str("0.");
            for _ in 0..scale - magnitude.len() {
                out.push('0');
            }
            out.push_str(&magnitude);
        }
    }
}

/// An integer in decimal, without core::fmt (this runs for every cell).
pub fn push_int(out: &mut String, value: i64) {
    let mut buffer = [0u8; 20];
    let mut at = buffer.len();
    let mut magnitude = value.unsigned_abs();
    loop {
        at -= 1;
        buffer[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if value < 0 {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&buffer[at..]).expect("digits"));
}

/// `value` zero-padded to `width` digits (value >= 0).
fn push_padded(out: &mut String, value: i64, width: usize) {
    let mut buffer = [b'0'; 20];
    let mut magnitude = value;
    for at in (0..width).rev() {
        buffer[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
    }
    out.push_str(std::str::from_utf8(&buffer[..width]).expect("digits"));
}

// -- time -----------------------------------------------------------------------------------

const US_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn valid_date(y: i64, m: i64, d: i64) -> bool {
    const DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=9999).contains(&y)
        && (1..=12).contains(&m)
        && d >= 1
        && d <= DAYS[(m - 1) as usize] + i64::from(m == 2 && leap(y))
}

pub(crate) fn number(bytes: &[u8]) -> i64 {
    bytes.iter().fold(0, |n, b| n * 10 + (b - b'0') as i64)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`, ASCII digits: the shapes Python reads
/// with `fromisoformat` alone (schemas/values.py `_COMMON_SHAPES`). `None`: another shape,
/// or one out of range (the Python decoder words those).
pub fn parse_timestamp(text: &str) -> Option<Ts> {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if ![0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
        .iter()
        .all(|&i| digit(i))
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while digit(i) {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 6 {
            return None;
        }
        micros = number(&b[start..i]) * 10i64.pow(6 - n as u32);
    }
    let offset_min = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) => {
            let (h, m) = (number(&[*h1, *h2]), number(&[*m1, *m2]));
            if h >= 24 || m >= 60 {
                return None;
            }
            let minutes = (h * 60 + m) as i32;
            if *sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let (y, mo, d) = (number(&b[0..4]), number(&b[5..7]), number(&b[8..10]));
    let (hh, mm, ss) = (number(&b[11..13]), number(&b[14..16]), number(&b[17..19]));
    if !valid_date(y, mo, d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let local = days_from_civil(y, mo, d) * US_PER_DAY + ((hh * 60 + mm) * 60 + ss) * 1_000_000 + micros;
    Some(Ts {
        us: local - offset_min as i64 * 60_000_000,
        offset_min,
    })
}

impl Ts {
    /// `datetime.isoformat()` (and orjson's rendering of an aware datetime, the same text).
    pub fn render(&self, out: &mut String) {
        let local = self.us + self.offset_min as i64 * 60_000_000;
        let (days, rest) = (local.div_euclid(US_PER_DAY), local.rem_euclid(US_PER_DAY));
        let (y, m, d) = civil_from_days(days);
        let (secs, micros) = (rest / 1_000_000, rest % 1_000_000);
        push_padded(out, y, 4);
        out.push('-');
        push_padded(out, m, 2);
        out.push('-');
        push_padded(out, d, 2);
        out.push('T');
        push_padded(out, secs / 3600, 2);
        out.push(':');
        push_padded(out, secs / 60 % 60, 2);
        out.push(':');
        push_padded(out, secs % 60, 2);
        if micros != 0 {
            out.push('.');
            push_padded(out, micros, 6);
        }
        let offset = self.offset_min.abs() as i64;
        out.push(if self.offset_min < 0 { '-' } else { '+' });
        push_padded(out, offset / 60, 2);
        out.push(':');
        push_padded(out, offset % 60, 2);
    }

    pub fn utc(&self) -> Ts {
        Ts {
            us: self.us,
            offset_min: 0,
        }
    }
}

// -- coercion (schemas/values.py COERCERS) ---------------------------------------------------

fn json_is_plain(value: &Json) -> Result<(), Refusal> {
    match value {
        Json::Number(n) if n.is_f64() => Err(Refusal::Unsupported), // orjson writes floats its own way
        Json::String(s) => plain_string(s),
        Json::Array(items) => items.iter().try_for_each(json_is_plain),
        Json::Object(map) => map.iter().try_for_each(|(k, v)| {
            plain_string(k)?;
            json_is_plain(v)
        }),
        _ => Ok(()),
    }
}

fn plain_string(s: &str) -> Result<(), Refusal> {
    if s.contains('\0') {
        return Err(Refusal::Invalid("INVALID_ATTRIBUTE_VALUE"));
    }
    if s.bytes().any(|b| b < 0x20 || b == b'\\') {
        return Err(Refusal::Unsupported); // escapes (and Python's "\\u0000" test) left to Python
    }
    Ok(())
}

/// 2**63, exactly representable: the floats that are 64-bit integers lie in [-2**63, 2**63).
const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;

const INVALID: Refusal = Refusal::Invalid("INVALID_ATTRIBUTE_VALUE");

/// A JSON value (not null) coerced to `ty`.
pub fn coerce(ty: AttrType, value: &Json) -> Result<Value, Refusal> {
    match ty {
        AttrType::String => match value {
            Json::String(s) if !s.contains('\0') => Ok(Value::Str(Rc::from(s.as_str()))),
            _ => Err(INVALID),
        },
        AttrType::Integer => match value {
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Value::Int(i))
                } else if n.is_u64() {
                    Err(INVALID)
                } else {
                    let f = n.as_f64().ok_or(INVALID)?;
                    if f.fract() == 0.0 && (-TWO_TO_63..TWO_TO_63).contains(&f) {
                        Ok(Value::Int(f as i64))
                    } else {
                        Err(INVALID)
                    }
                }
            }
            Json::String(s) => {
                if !s.is_ascii() {
                    return Err(Refusal::Unsupported);
                }
                let body = s.strip_prefix(['+', '-']).unwrap_or(s);
                if body.is_empty() || body.len() > 19 || !body.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(INVALID);
                }
                s.parse::<i64>().map(Value::Int).map_err(|_| INVALID)
            }
            _ => Err(INVALID),
        },
        AttrType::Decimal => match value {
            Json::Number(n) if !n.is_f64() => Dec::parse(&n.to_string()).map(Value::Dec),
            Json::Number(_) => Err(Refusal::Unsupported), // str(float) first: Python's repr
            Json::String(s) => Dec::parse(s).map(Value::Dec),
            _ => Err(INVALID),
        },
        AttrType::Float => match value {
            // `-0` reads as -0.0 here, as the integer 0 in Python (so 0.0): left to it.
            Json::Number(n) if n.as_f64() == Some(0.0) && n.as_f64().is_some_and(f64::is_sign_negative) => {
                Err(Refusal::Unsupported)
            }
            Json::Number(n) => Ok(Value::Float(n.as_f64().ok_or(INVALID)?)),
            _ => Err(INVALID),
        },
        AttrType::Boolean => match value {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            _ => Err(INVALID),
        },
        AttrType::Timestamp => match value {
            Json::String(s) => parse_timestamp(s).map(Value::Ts).ok_or(Refusal::Unsupported),
            _ => Err(INVALID),
        },
        AttrType::Date => match value {
            Json::String(s) => {
                if !s.is_ascii() {
                    return Err(Refusal::Unsupported);
                }
                let b = s.as_bytes();
                let shaped = b.len() == 10
                    && b[4] == b'-'
                    && b[7] == b'-'
                    && [0, 1, 2, 3, 5, 6, 8, 9].iter().all(|&i| b[i].is_ascii_digit());
                if shaped && valid_date(number(&b[0..4]), number(&b[5..7]), number(&b[8..10])) {
                    Ok(Value::Date(Rc::from(s.as_str())))
                } else {
                    Err(INVALID)
                }
            }
            _ => Err(INVALID),
        },
        AttrType::Json => {
            json_is_plain(value)?;
            Ok(Value::Json(Rc::new(value.clone())))
        }
    }
}

/// `add_numeric` of the `sum` strategy (None counts as absent, not zero).
pub fn add(current: Option<&Value>, delta: Option<&Value>) -> Result<Option<Value>, Refusal> {
    Ok(match (current, delta) {
        (_, None) => current.cloned(),
        (None, Some(d)) => Some(d.clone()),
        (Some(Value::Int(a)), Some(Value::Int(b))) => Some(Value::Int(a.checked_add(*b).ok_or(Refusal::Unsupported)?)),
        (Some(Value::Dec(a)), Some(Value::Dec(b))) => Some(Value::Dec(a.add(*b)?)),
        (Some(Value::Float(a)), Some(Value::Float(b))) => Some(Value::Float(a + b)),
        _ => return Err(Refusal::Unsupported),
    })
}

// -- renderings -----------------------------------------------------------------------------

/// Python's `repr(float)` where it has no exponent; `None` otherwise.
fn float_repr(f: f64) -> Option<String> {
    let magnitude = f.abs();
    if f != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        return None;
    }
    let mut text = format!("{f}");
    if !text.contains('.') {
        text.push_str(".0");
    }
    Some(text)
}

/// `to_copy_text`: the text COPY reads for a text-typed frame column (float and boolean
/// columns are typed, not text).
pub fn copy_text(value: &Value, out: &mut String) {
    match value {
        Value::Str(s) | Value::Date(s) => out.push_str(s),
        Value::Int(i) => push_int(out, *i),
        Value::Dec(d) => d.render(out),
        Value::Ts(t) => t.render(out),
        Value::Json(j) => out.push_str(&serde_json::to_string(j.as_ref()).unwrap_or_default()),
        Value::Float(f) => out.push_str(&float_repr(*f).unwrap_or_else(|| format!("{f:?}"))),
        Value::Bool(b) => out.push_str(if *b { "t" } else { "f" }),
    }
}

/// A JSON string as orjson writes it.
pub fn json_string(s: &str, out: &mut String) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// orjson.dumps(to_json_value(value)). Fails only for a float Python would write with an exponent.
pub fn json_value(value: Option<&Value>, out: &mut String) -> Result<(), Refusal> {
    let mut text = String::new();
    match value {
        None => out.push_str("null"),
        Some(Value::Str(s)) | Some(Value::Date(s)) => json_string(s, out),
        Some(Value::Int(i)) => push_int(out, *i),
        Some(Value::Dec(d)) => {
            d.render(&mut text);
            json_string(&text, out);
        }
        Some(Value::Float(f)) => out.push_str(&float_repr(*f).ok_or(Refusal::Unsupported)?),
        Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::Ts(t)) => {
            t.utc().render(&mut text);
            json_string(&text, out);
        }
        Some(Value::Json(j)) => out.push_str(&serde_json::to_string(j.as_ref()).unwrap_or_default()),
    }
    Ok(())
}

/// Text the Python side turns back into the Python value (for a custom strategy's context).
pub fn python_text(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Float(f) => out.push_str(&format!("{f:?}")),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        other => copy_text(other, &mut out),
    }
    out
}
