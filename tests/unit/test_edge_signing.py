"""The node's half of the edge signature: `mutagg edge-key` provisions a key that the edge
client loads and signs with, and the job's verifier (holding only the master key) accepts."""

from __future__ import annotations

import io
import stat

import pytest

from edge.signing import InvalidNodeKey, derive_node_key, load_node_key, parse_node_key, signature_header
from mutagg.cli import _parser, main
from mutagg.edge_key import run
from mutagg.settings import Settings
from schemas.signature import Verifier, node_key


class Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def master_file(tmp_path):
    path = tmp_path / "master.key"
    path.write_text("\n  the master key  \n")
    return path


def test_edge_key_writes_the_node_key_the_verifier_accepts(tmp_path, master_file):
    out = tmp_path / "van-07.key"
    assert main(["edge-key", "van-07", "--master-key-file", str(master_file), "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = load_node_key(out)
    assert key == node_key(b"the master key", "van-07") == derive_node_key(b"the master key", "van-07")
    payload = b'{"edge_node_id": "van-07"}'
    assert Verifier(b"the master key").problem("van-07", payload, (signature_header(key, payload),)) is None
    assert Verifier(b"the master key").problem("van-08", payload, (signature_header(key, payload),)) is not None


def test_edge_key_reads_the_settings_master_key_and_writes_raw(tmp_path, master_file):
    args = _parser().parse_args(["edge-key", "shop-1", "--format", "raw"])
    out = io.BytesIO()
    assert run(args, Settings(edge_master_key_file=str(master_file)), out) == 0
    assert out.getvalue() == node_key(b"the master key", "shop-1") and parse_node_key(out.getvalue()) == out.getvalue()


def test_edge_key_refuses_a_terminal_unless_shown(master_file, capsys):
    args = _parser().parse_args(["edge-key", "shop-1", "--master-key-file", str(master_file)])
    screen = Terminal()
    assert run(args, Settings(), screen) == 2 and screen.getvalue() == b""
    assert "refusing to print a secret key to a terminal" in capsys.readouterr().err
    args.show = True
    assert run(args, Settings(), screen) == 0
    assert screen.getvalue() == node_key(b"the master key", "shop-1").hex().encode() + b"\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["edge-key", "shop-1"], "no master key"),
    (["edge-key", "", "--master-key-file", "{master}"], "1..128 characters"),
    (["edge-key", "shop-1", "--master-key-file", "/no/such/key"], "--master-key-file /no/such/key"),
    (["edge-key", "shop-1", "--master-key-file", "{master}", "--out", "/no/such/dir/k"], "cannot write"),
])
def test_edge_key_fails_with_one_clear_line_and_exit_2(argv, message, master_file, capsys, monkeypatch):
    monkeypatch.delenv("MUTAGG_EDGE_MASTER_KEY_FILE", raising=False)
    assert main([a.format(master=master_file) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_a_node_key_file_is_hex_or_raw(tmp_path):
    key = bytes(range(32))
    assert parse_node_key(key.hex().upper().encode() + b"\r\n") == key
    assert parse_node_key(key) == key
    for bad in (b"", b"abc", key.hex().encode()[:-1], b"g" * 64):
        with pytest.raises(InvalidNodeKey):
            parse_node_key(bad)
    with pytest.raises(InvalidNodeKey, match="node key file"):
        load_node_key(tmp_path / "missing")


def test_the_node_command_refuses_a_bad_key_file_with_exit_2(tmp_path, capsys, monkeypatch):
    from edge.node import main as node_main

    monkeypatch.delenv("MUTAGG_EDGE_NODE_KEY_FILE", raising=False)
    bad = tmp_path / "van-07.key"
    bad.write_text("not a key\n")
    argv = ["--node-id", "van-07", "--outbox", str(tmp_path / "van-07.sqlite3"), "--node-key-file", str(bad), "status"]
    assert node_main(argv) == 2
    assert f"node key file {bad}" in capsys.readouterr().err
    monkeypatch.setenv("MUTAGG_EDGE_NODE_KEY_FILE", str(tmp_path / "missing.key"))
    assert node_main([*argv[:4], "status"]) == 2
    assert "missing.key" in capsys.readouterr().err
