"""`mutagg topics acls --apply` against a broker without an authorizer (the plain local
one): a clear error, exit 2, instead of ACLs that would not be enforced."""

from __future__ import annotations

import pytest

from mutagg import acls
from schemas.errors import ConfigError
from tests.integration.conftest import mutagg

pytestmark = pytest.mark.integration


def test_applying_acls_on_a_broker_without_an_authorizer_says_so(base_settings):
    with pytest.raises(ConfigError, match=r"Kafka at \S+ has no authorizer \(.*\): set authorizer\.class\.name"):
        acls.apply(base_settings, acls.plan(base_settings, edges=["van-1"]))
    result = mutagg(base_settings, "topics", "acls", "--apply", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "mutagg: ConfigError: Kafka at" in result.stderr and "has no authorizer" in result.stderr
