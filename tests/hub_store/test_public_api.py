import sqlite3

import pytest

import hub_store
import runtime.hub
from hub_store import Catalog, StoreError


@pytest.mark.parametrize("module", [hub_store, runtime.hub])
def test_every_public_name_exists(module):
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "c.sqlite3"
    Catalog(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Catalog(path)
