"""Settings from CLI flags and STUDIO_* env vars, validated with clear errors."""

from pathlib import Path

import pytest

from core.config import load_settings
from core.errors import ConfigError


def test_defaults_serve_on_loopback_7860():
    s = load_settings({}, env={})
    assert (s.host, s.port, s.model, s.data_dir, s.auth_mode) == ("127.0.0.1", 7860, "default", Path("data"), "local")


def test_cli_flag_beats_env_beats_default(tmp_path):
    env = {"STUDIO_PORT": "8001", "STUDIO_DATA_DIR": str(tmp_path / "env"), "STUDIO_MODEL": "tiny"}
    s = load_settings({"port": 9000}, env=env)
    assert s.port == 9000 and s.data_dir == tmp_path / "env" and s.model == "tiny"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"STUDIO_PORT": "eighty"}, "STUDIO_PORT"),
        ({"STUDIO_PORT": "70000"}, "out of range"),
        ({"STUDIO_HOST": "my host"}, "not an IP address"),
        ({"STUDIO_AUTH_MODE": "open"}, "Unknown auth mode"),
        ({"STUDIO_AUTH_MODE": "team", "STUDIO_USERS_FILE": "/no/such/file"}, "users file"),
        ({"STUDIO_MODEL": "  "}, "model setting is empty"),
        ({"STUDIO_CHAT_DTYPE": "int8"}, "Unknown chat dtype"),
    ],
)
def test_invalid_settings_are_refused_with_a_hint(env, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings({}, env=env)
    assert fragment in str(info.value) and info.value.hint


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        load_settings({"data_dir": str(f)}, env={})


def test_space_without_persistent_volume_is_flagged_ephemeral(tmp_path):
    s = load_settings({"data_dir": str(tmp_path)}, env={"SPACE_ID": "me/studio"})
    assert s.on_space and s.storage_is_ephemeral
    assert not load_settings({}, env={}).storage_is_ephemeral


def test_public_settings_never_carry_secrets():
    env = {"HF_TOKEN": "hf_secret_value", "STUDIO_OPERATOR_KEY": "0xdeadbeef"}
    dumped = repr(load_settings({}, env=env).public_dict())
    assert "hf_secret_value" not in dumped and "deadbeef" not in dumped


def test_both_uis_generate_one_form_from_a_config_dataclass():
    """core.config.form_fields is the one reading of a config's fields: the labeling app's controls honour
    choices and None defaults as the console's do, and their values come back in the fields' types."""
    from dataclasses import dataclass, field

    import gradio as gr

    from app.forms import build_config, components_for
    from core.config import form_fields

    @dataclass
    class Options:
        loss: str = field(default="ipo", metadata={"choices": ("sigmoid", "ipo"), "help": "which loss"})
        steps: int = field(default=10, metadata={"min": 1, "max": 100})
        margin: float | None = None
        tags: tuple[str, ...] = ("a", "b")
        note: str | None = None
        fast: bool = False

    fields = {f.name: f for f in form_fields(Options)}
    assert {n: f.kind for n, f in fields.items()} == {
        "loss": "choice",
        "steps": "int",
        "margin": "optional_float",
        "tags": "sequence",
        "note": "text",
        "fast": "bool",
    }
    controls = components_for(Options)
    assert [type(c) for c in controls] == [gr.Dropdown, gr.Slider, gr.Number, gr.Textbox, gr.Textbox, gr.Checkbox]
    assert controls[0].choices == [("sigmoid", "sigmoid"), ("ipo", "ipo")] and controls[0].info == "which loss"
    assert build_config(Options, ("sigmoid", 7.0, None, "x, y ,", "", True)) == Options(
        "sigmoid", 7, None, ("x", "y"), None, True
    )
    assert build_config(Options, ("ipo", 3, 0.5, "", "hi", False)) == Options("ipo", 3, 0.5, (), "hi", False)
