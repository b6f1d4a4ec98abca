"""The one masking function, on every form a secret takes in a URL; other text is untouched."""

from __future__ import annotations

import pytest

from aepipe.secrets import mask, secrets_of


@pytest.mark.parametrize("url, expected", [
    ("postgresql+psycopg://aepipe:s3cret@127.0.0.1:5432/db", "postgresql+psycopg://aepipe:***@127.0.0.1:5432/db"),
    ("postgresql+psycopg://aepipe:p@ss@w0rd@dbhost/db", "postgresql+psycopg://aepipe:***@dbhost/db"),  # raw @
    ("postgresql+psycopg://aepipe:p%40ss%3Aw@dbhost/db", "postgresql+psycopg://aepipe:***@dbhost/db"),  # percent-encoded
    ("postgresql+psycopg://aepipe@dbhost/db?password=hunter22&sslmode=require",
     "postgresql+psycopg://aepipe@dbhost/db?password=***&sslmode=require"),
    ("https://host/api?token=abc&x=1&API_KEY=zz#frag", "https://host/api?token=***&x=1&API_KEY=***#frag"),
    ("journal:////tmp/mlruns/optuna.journal", "journal:////tmp/mlruns/optuna.journal"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("postgresql+psycopg://aepipe@dbhost/db", "postgresql+psycopg://aepipe@dbhost/db"),  # no password
])
def test_every_url_form(url, expected):
    assert mask(url) == expected
    assert mask(f"cannot open {url}: refused") == f"cannot open {expected}: refused"


def test_a_quoted_secret_is_masked_as_a_whole_word_only():
    url = "postgresql+psycopg://u:u@dbhost/db"
    secrets = secrets_of(url)
    assert "u" in secrets
    message = 'connection to server failed: Connection refused (user "u", password u)'
    assert mask(message, secrets) == 'connection to server failed: Connection refused (user "***", password ***)'
    assert "refused" in mask(message, secrets) and "ref***sed" not in mask(message, secrets)
    assert set(secrets_of("postgresql+psycopg://a:p%40ss@h/d?password=x%21")) == {"p%40ss", "p@ss", "x%21", "x!"}
    plain = "Training diverged at epoch 3: loss = nan (lower train.lr)"
    assert mask(plain, ["at", "3"]) == "Training diverged *** epoch ***: loss = nan (lower train.lr)"
    assert mask(plain) == plain
