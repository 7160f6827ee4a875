"""The accounts file: a wrong key is named with a suggestion, never with its value; secrets from
the environment or from files; https for every real provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.settings import AccountsError, load_accounts, sandbox_accounts

# Distinctive values: none may appear in any accounts-file error.
SECRET = "s3cr3t-KEY-7f2d9e4b1c33"
ODD_VALUE = "v4lue-THAT-must-not-show"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(AccountsError) as info:
        load_accounts(_write(tmp_path, text))
    message = str(info.value)
    assert SECRET not in message and ODD_VALUE not in message, message
    assert "input_value" not in message, message
    return message


EGUMA = '[eguma.default]\nbase_url = "https://api.e-guma.ch/v1"\n'


@pytest.fixture(autouse=True)
def _no_credentials_directory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    yield


# --- unknown and misspelt keys --------------------------------------------------------------------


def test_e_gumas_own_spelling_apikey_is_named_with_the_right_one(tmp_path: Path) -> None:
    message = _error(tmp_path, EGUMA + f'apikey = "{SECRET}"\n')
    assert "unknown key 'apikey' in [eguma.default]; did you mean 'api_key'?" in message
    assert str(tmp_path / "accounts.toml") in message


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("api-key", "api_key"),
        ("ApiKey", "api_key"),
        ("base-url", "base_url"),
        ("timeout", "timeout_s"),
        ("max_attemps", "max_attempts"),
        ("rate_limit", "rate_limit_per_s"),
        ("integrationid", "integration_id"),
    ],
)
def test_a_near_miss_gets_a_suggestion(tmp_path: Path, key: str, meant: str) -> None:
    message = _error(tmp_path, EGUMA + f'"{key}" = "{ODD_VALUE}"\n')
    assert f"unknown key '{key}' in [eguma.default]; did you mean '{meant}'?" in message


def test_a_key_like_no_other_is_named_without_a_guess(tmp_path: Path) -> None:
    message = _error(tmp_path, EGUMA + f'colour = "{ODD_VALUE}"\n')
    assert "unknown key 'colour' in [eguma.default]" in message and "did you mean" not in message


@pytest.mark.parametrize("key", ["provider", "name"])
def test_provider_and_name_come_from_the_table_name_only(tmp_path: Path, key: str) -> None:
    message = _error(tmp_path, EGUMA + f'{key} = "{ODD_VALUE}"\n')
    assert f"unknown key '{key}' in [eguma.default]" in message


def test_a_misspelt_provider_is_named_with_a_suggestion(tmp_path: Path) -> None:
    message = _error(tmp_path, '[egumma.default]\nbase_url = "https://api.e-guma.ch/v1"\n')
    assert "unknown provider [egumma]; did you mean 'eguma'?" in message


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (f'max_attempts = "{ODD_VALUE}"', "max_attempts"),
        ("max_attempts = 0", "max_attempts"),
        (f'auth = "{ODD_VALUE}"', "auth"),
        (f'timeout_s = "{ODD_VALUE}"', "timeout_s"),
        (f'sandbox = "{ODD_VALUE}"', "sandbox"),
        ("api_key = 735521", "api_key"),
        (f'api_key = ["{SECRET}"]', "api_key"),
    ],
)
def test_a_bad_value_names_the_key_never_the_value(tmp_path: Path, line: str, field: str) -> None:
    message = _error(tmp_path, EGUMA + line + "\n")
    assert "[eguma.default]" in message and field in message
    assert "735521" not in message


def test_a_toml_syntax_error_shows_the_position_not_the_text(tmp_path: Path) -> None:
    message = _error(tmp_path, EGUMA + f'api_key = "{SECRET}\n')
    assert "line 3" in message


def test_a_bad_character_inside_a_secret_is_not_quoted(tmp_path: Path) -> None:
    message = _error(tmp_path, EGUMA + 'api_key = "k3y\x07part"\n')
    assert "line 3" in message and "Illegal character" in message
    assert "\\x07" not in message and "\x07" not in message


# --- secrets from files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (SECRET, SECRET),
        (SECRET + "\n", SECRET),  # what echo and most editors write
        (SECRET + "\r\n", SECRET),
        (SECRET + "\n\n", SECRET + "\n"),  # one newline only: the rest is the secret's
        ("  " + SECRET + " \n", "  " + SECRET + " "),
    ],
)
def test_file_secret_is_the_content_less_one_trailing_newline(
    tmp_path: Path, content: str, secret: str
) -> None:
    key_file = tmp_path / "eguma-key"
    key_file.write_text(content, newline="")
    accounts = load_accounts(_write(tmp_path, EGUMA + f'api_key = "file:{key_file}"\n'))
    api_key = accounts[("eguma", "default")].api_key
    assert api_key is not None and api_key.get_secret_value() == secret
    assert SECRET not in repr(accounts)


def test_fourvenues_v1_credentials_from_files(tmp_path: Path) -> None:
    (tmp_path / "id").write_text("integration-1\n")
    (tmp_path / "secret").write_text(SECRET + "\n")
    text = (
        '[fourvenues.v1]\nbase_url = "https://api.fourvenues.com"\nauth = "v1"\n'
        f'integration_id = "file:{tmp_path / "id"}"\nsecret = "file:{tmp_path / "secret"}"\n'
    )
    account = load_accounts(_write(tmp_path, text))[("fourvenues", "v1")]
    assert account.integration_id is not None and account.integration_id.get_secret_value() == "integration-1"
    assert account.secret is not None and account.secret.get_secret_value() == SECRET
    assert account.missing_credentials() is None


def test_a_relative_file_is_beside_the_accounts_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "eguma").write_text(SECRET + "\n")
    account = load_accounts(_write(tmp_path, EGUMA + 'api_key = "file:keys/eguma"\n'))[("eguma", "default")]
    assert account.api_key is not None and account.api_key.get_secret_value() == SECRET


def test_a_relative_file_is_a_systemd_credential_when_there_are_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "eguma-api-key").write_text(SECRET + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    account = load_accounts(_write(tmp_path, EGUMA + 'api_key = "file:eguma-api-key"\n'))[
        ("eguma", "default")
    ]
    assert account.api_key is not None and account.api_key.get_secret_value() == SECRET


def test_a_missing_secret_file_is_one_error_naming_path_and_account(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    message = _error(tmp_path, EGUMA + f'api_key = "file:{missing}"\n')
    assert str(missing) in message and "[eguma.default].api_key" in message
    assert "No such file" in message


def test_an_unreadable_secret_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    message = _error(tmp_path, EGUMA + f'api_key = "file:{directory}"\n')
    assert str(directory) in message and "[eguma.default].api_key" in message


def test_a_secret_file_that_is_not_text_is_an_error_without_its_bytes(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + SECRET.encode())
    message = _error(tmp_path, EGUMA + f'api_key = "file:{binary}"\n')
    assert str(binary) in message


def test_env_secrets_still_work_and_an_unset_one_leaves_the_account_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EGUMA_TEST_KEY", SECRET)
    monkeypatch.delenv("EGUMA_UNSET_KEY", raising=False)
    text = EGUMA + 'api_key = "env:EGUMA_TEST_KEY"\n[eguma.other]\nbase_url = "https://api.e-guma.ch/v1"\n'
    text += 'api_key = "env:EGUMA_UNSET_KEY"\n'
    accounts = load_accounts(_write(tmp_path, text))
    key = accounts[("eguma", "default")].api_key
    assert key is not None and key.get_secret_value() == SECRET
    assert accounts[("eguma", "other")].missing_credentials() == "account eguma.other: api_key is not set"


# --- https for real providers --------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://api.e-guma.ch/v1", "api.e-guma.ch/v1", "ftp://api.e-guma.ch"])
def test_a_real_account_must_use_https(tmp_path: Path, url: str) -> None:
    message = _error(tmp_path, f'[eguma.live]\nbase_url = "{url}"\napi_key = "{SECRET}"\n')
    assert "[eguma.live]" in message and "https" in message
    assert url not in message


def test_an_account_marked_sandbox_may_use_http_and_says_so(tmp_path: Path) -> None:
    text = '[eguma.local]\nbase_url = "http://127.0.0.1:8765/eguma/v1"\nsandbox = true\napi_key = "k"\n'
    account = load_accounts(_write(tmp_path, text))[("eguma", "local")]
    assert account.sandbox is True


def test_accounts_file_accounts_are_real_and_the_built_in_ones_are_the_sandbox(tmp_path: Path) -> None:
    account = load_accounts(_write(tmp_path, EGUMA + 'api_key = "k"\n'))[("eguma", "default")]
    assert account.sandbox is False
    assert all(a.sandbox for a in sandbox_accounts("http://127.0.0.1:8765").values())


def test_the_shipped_example_accounts_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "accounts.example.toml"
    accounts = load_accounts(example)
    assert len(accounts) == 4 and not any(a.sandbox for a in accounts.values())
