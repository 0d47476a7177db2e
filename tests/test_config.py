"""The settings object: environment parsing, secret redaction, and the README table kept in sync."""

from __future__ import annotations

import pytest

from app.config import README_TABLE_MARKERS, REPO_ROOT, ConfigError, Settings, markdown_table, with_config_table


def test_environment_overrides_defaults_with_types():
    """Numbers are parsed to their field's type; unset variables keep the defaults."""
    s = Settings.from_env({"VQA_MAX_QUESTION_CHARS": "100", "WATCHDOG_QUALITY_THRESHOLD": "0.6", "ES_URL": "http://x"})
    assert s.max_question_chars == 100 and s.watchdog_quality_threshold == 0.6 and s.es_url == "http://x"
    assert s.watchdog_cooldown_minutes == 30.0


def test_a_bad_number_names_the_variable():
    """A non-numeric value for a numeric setting is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="WATCHDOG_MIN_SAMPLES='many'"):
        Settings.from_env({"WATCHDOG_MIN_SAMPLES": "many"})


def test_secrets_never_appear_in_repr_or_redacted():
    """Passwords, API keys and tokens are masked wherever settings are printed."""
    s = Settings.from_env({"ES_PASSWORD": "pw-123", "JENKINS_API_TOKEN": "tok-456", "VQA_ADMIN_TOKEN": "adm-789",
                           "ES_API_KEY": "key-000"})
    text = repr(s) + str(s.redacted())
    for secret in ("pw-123", "tok-456", "adm-789", "key-000"):
        assert secret not in text


def test_readme_configuration_table_matches_the_settings():
    """The README's configuration table is exactly the generated one (one source of truth)."""
    readme = (REPO_ROOT / "README.md").read_text()
    start, end = README_TABLE_MARKERS
    table = readme[readme.index(start) + len(start):readme.index(end)].strip()
    hint = "regenerate with: python -m scripts.readme_config_table"
    assert table == markdown_table(), hint
    assert with_config_table(readme) == readme, hint
