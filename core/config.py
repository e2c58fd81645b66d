"""Studio settings: one dataclass filled from CLI flags and ``STUDIO_*`` environment variables.

Precedence: CLI flag > environment variable > default. Every field is validated once in
:func:`load_settings`, so the rest of the code can trust what it gets. Secrets (HF token, operator
key) are deliberately NOT fields here: they are read from the environment at the moment of use, so
they can never be echoed by a settings dump, stored in DuckDB or written to a log.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from core.errors import ConfigError

AUTH_MODES = ("local", "team")
RELEASE_GATE_MODES = ("off", "warn", "enforce")
CHAT_DTYPES = ("auto", "float32", "bfloat16", "float16")
SPACES_DATA_DIR = Path("/data")


def _meta(env: str, help: str, admin_only: bool = False) -> dict[str, Any]:
    """``admin_only``: a path, endpoint or file (anything that may hold a key or reveal the machine), shown to
    admins only."""
    return {"env": env, "help": help, "admin_only": admin_only}


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start; see ``launch.py --help`` for the CLI side."""

    data_dir: Path = field(
        default=Path("data"),
        metadata=_meta("STUDIO_DATA_DIR", "Where the DuckDB file, models, runs and chain state live.", admin_only=True),
    )
    model: str = field(
        default="default",
        metadata=_meta(
            "STUDIO_MODEL",
            "Base policy: 'default' (SmolLM2-135M-Instruct, offline), 'tiny' (test model), "
            "a local model directory, or a Hub id (online only).",
            admin_only=True,
        ),
    )
    chat_dtype: str = field(
        default="auto",
        metadata=_meta(
            "STUDIO_CHAT_DTYPE",
            "Precision of the shared chat model: 'auto' (bfloat16 where the device computes it "
            "natively: recent GPUs, CPUs with AMX or AVX512-BF16; else float32, float16 on older GPUs), "
            "'float32', 'bfloat16' or 'float16'.",
        ),
    )
    host: str = field(
        default="127.0.0.1",
        metadata=_meta("STUDIO_HOST", "Interface to listen on (0.0.0.0 to accept other machines).", admin_only=True),
    )
    port: int = field(default=7860, metadata=_meta("STUDIO_PORT", "TCP port of the one server."))
    auth_mode: str = field(
        default="local",
        metadata=_meta("STUDIO_AUTH_MODE", "'local': one user, no login. 'team': accounts from the users file."),
    )
    users_file: Path | None = field(
        default=None,
        metadata=_meta("STUDIO_USERS_FILE", "Team mode accounts (one 'name:password:role' per line).", admin_only=True),
    )
    max_body_bytes: int = field(
        default=1_000_000, metadata=_meta("STUDIO_MAX_BODY_BYTES", "Largest REST API request body accepted.")
    )
    hub_endpoint: str | None = field(
        default=None,
        metadata=_meta(
            "HF_ENDPOINT",
            "Hugging Face Hub endpoint for exports (token comes from HF_TOKEN, never stored).",
            admin_only=True,
        ),
    )
    chain_rpc_url: str | None = field(
        default=None,
        metadata=_meta(
            "STUDIO_CHAIN_RPC_URL", "JSON-RPC endpoint of an EVM chain; empty = embedded local chain.", admin_only=True
        ),
    )
    chain_id: int | None = field(default=None, metadata=_meta("STUDIO_CHAIN_ID", "Chain id of that endpoint."))
    contract_address: str | None = field(
        default=None,
        metadata=_meta(
            "STUDIO_CHAIN_CONTRACT", "Deployed ledger contract on that chain (`python -m core.chain deploy` prints it)."
        ),
    )
    inference_url: str | None = field(
        default=None,
        metadata=_meta(
            "STUDIO_INFERENCE_URL",
            "OpenAI-compatible inference server (vLLM, SGLang, TGI, Ollama, llama.cpp server, "
            "`transformers serve`) that answers chat pairs, arena and compare; empty = the in-process model. Its API "
            "key, if any, comes from STUDIO_INFERENCE_API_KEY and is never stored.",
            admin_only=True,
        ),
    )
    inference_model: str | None = field(
        default=None,
        metadata=_meta(
            "STUDIO_INFERENCE_MODEL",
            "Model name to request from that server (default: the first one it lists).",
            admin_only=True,
        ),
    )
    release_gate: str = field(
        default="enforce",
        metadata=_meta(
            "STUDIO_RELEASE_GATE",
            "What a failing release gate does: 'enforce' refuses Hub pushes (an admin can "
            "override with a reason) and warns on local exports; 'warn' only warns; 'off' checks nothing.",
        ),
    )
    backup_repo: str | None = field(
        default=None,
        metadata=_meta(
            "STUDIO_BACKUP_REPO",
            "Hugging Face dataset repo (owner/name) that keeps a snapshot of every label, version "
            "and report; restored on an empty disk at start. Token from HF_TOKEN, never stored.",
            admin_only=True,
        ),
    )
    backup_dir: Path | None = field(
        default=None,
        metadata=_meta(
            "STUDIO_BACKUP_DIR", "Or a directory for the snapshots (another disk, a mounted bucket).", admin_only=True
        ),
    )
    backup_every: int = field(
        default=300,
        metadata=_meta(
            "STUDIO_BACKUP_EVERY",
            "Seconds between backups when something changed (also after every job and at shutdown).",
        ),
    )
    backup_public: bool = field(
        default=False, metadata=_meta("STUDIO_BACKUP_PUBLIC", "Create the backup repo public (default private).")
    )
    backup_checkpoints: bool = field(
        default=False,
        metadata=_meta(
            "STUDIO_BACKUP_CHECKPOINTS",
            "Also keep the newest checkpoint of a job still training, so it can resume after a restart.",
        ),
    )
    on_space: bool = field(
        default=False,
        metadata=_meta("SPACE_ID", "Set by Hugging Face Spaces; switches the data dir to /data when it is mounted."),
    )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "studio.duckdb"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def backup_configured(self) -> bool:
        return bool(self.backup_repo or self.backup_dir)

    @property
    def storage_is_ephemeral(self) -> bool:
        """On a Space without a persistent volume every label is lost on restart: the UI warns."""
        return self.on_space and not _is_relative_to(self.data_dir.resolve(), SPACES_DATA_DIR)

    def public_dict(self, admin: bool = True) -> dict[str, Any]:
        """Settings for display (Settings page). Holds no secrets by construction; without ``admin`` the
        admin-only ones (paths, endpoints, files) are left out."""
        return {
            f.name: (str(v) if isinstance(v, Path) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
            if admin or not f.metadata.get("admin_only")
        }


def _is_relative_to(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def _kind(name: str) -> type:
    """The scalar type a settings field holds (``int | None`` -> int)."""
    hint = typing.get_type_hints(Settings)[name]
    args = typing.get_args(hint) or (hint,)
    return next((k for k in (bool, int, Path) if k in args), str)


def _coerce(label: str, raw: Any, kind: type) -> Any:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        if kind is bool:
            if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes", "on")
        if kind is int:
            return int(text)
        if kind is Path:
            return Path(text).expanduser()
    except ValueError:
        raise ConfigError(
            f"Setting {label}={text!r} is not a valid {kind.__name__}", hint=f"give {label} a {kind.__name__} value"
        ) from None
    return text


def load_settings(cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate settings. ``cli`` holds only the flags the user actually passed."""
    env = os.environ if env is None else env
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = cli.get(f.name, env.get(f.metadata["env"]))
        if f.name == "on_space":
            values[f.name] = bool(env.get("SPACE_ID"))
            continue
        label = f"--{f.name.replace('_', '-')}" if f.name in cli else f.metadata["env"]
        value = _coerce(label, raw, _kind(f.name))
        if value is not None:
            values[f.name] = value
    if values.get("on_space") and "data_dir" not in values and SPACES_DATA_DIR.is_dir():
        values["data_dir"] = SPACES_DATA_DIR
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not 1 <= s.port <= 65535:
        raise ConfigError(f"Port {s.port} is out of range", hint="use a port between 1 and 65535")
    if s.host not in ("localhost",):
        try:
            ipaddress.ip_address(s.host)
        except ValueError:
            raise ConfigError(
                f"Host {s.host!r} is not an IP address", hint="use 127.0.0.1 (this machine) or 0.0.0.0 (all interfaces)"
            ) from None
    if s.auth_mode not in AUTH_MODES:
        raise ConfigError(f"Unknown auth mode {s.auth_mode!r}", hint=f"use one of {', '.join(AUTH_MODES)}")
    if s.release_gate not in RELEASE_GATE_MODES:
        raise ConfigError(
            f"Unknown release gate mode {s.release_gate!r}",
            hint=f"set STUDIO_RELEASE_GATE to one of {', '.join(RELEASE_GATE_MODES)}",
        )
    if s.chat_dtype not in CHAT_DTYPES:
        raise ConfigError(f"Unknown chat dtype {s.chat_dtype!r}", hint=f"use one of {', '.join(CHAT_DTYPES)}")
    if s.users_file is not None and not s.users_file.is_file():
        raise ConfigError(
            f"The users file {s.users_file} does not exist",
            hint="set STUDIO_USERS_FILE to a file of 'name:password:role' lines",
        )
    if s.data_dir.exists() and not s.data_dir.is_dir():
        raise ConfigError(
            f"Data dir {s.data_dir} exists and is not a directory",
            hint="pass --data-dir pointing at a directory (it is created if missing)",
        )
    if s.max_body_bytes < 1024:
        raise ConfigError("STUDIO_MAX_BODY_BYTES is below 1024 bytes", hint="use a larger limit")
    if s.inference_url is not None and not s.inference_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"The inference URL {s.inference_url!r} is not an http(s) URL",
            hint="e.g. --inference-url http://127.0.0.1:8000/v1",
        )
    if s.backup_repo and s.backup_dir:
        raise ConfigError(
            "Both a backup repo and a backup dir are set",
            hint="set one of STUDIO_BACKUP_REPO (--backup-repo) or STUDIO_BACKUP_DIR (--backup-dir)",
        )
    if s.backup_repo and not re.fullmatch(r"[\w.-]+/[\w.-]+", s.backup_repo):
        raise ConfigError(
            f"The backup repo {s.backup_repo!r} is not owner/name",
            hint="e.g. --backup-repo my-team/studio-backup (a dataset repo; created if missing)",
        )
    if s.backup_every < 10:
        raise ConfigError(
            f"STUDIO_BACKUP_EVERY={s.backup_every} is below 10 seconds",
            hint="back up every 10 seconds or more (default 300)",
        )
    if s.backup_dir is not None and s.backup_dir.resolve() == s.data_dir.resolve():
        raise ConfigError("The backup dir is the data dir", hint="back up to another folder, ideally another disk")
    if not s.model.strip():
        raise ConfigError("The model setting is empty", hint="use 'default', 'tiny', a path or a Hub id")


# --- forms ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FormField:
    """One field of a config dataclass as every form shows it: the console's (pages.common.dataclass_form) and the
    labeling app's (app.forms.components_for) read the same description, so the two cannot drift.

    ``kind``: ``choice`` (metadata ``choices``), ``bool``, ``date``, ``optional_float`` (``float | None``: a toggle
    and a value), ``int``, ``float``, ``sequence`` (a tuple, entered comma-separated) or ``text`` (``None`` is empty).
    """

    name: str
    label: str
    help: str | None
    default: Any
    kind: str
    options: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None


def form_fields(cls: type, defaults: Mapping[str, Any] | None = None, group: str | None = None) -> list[FormField]:
    """The fields of config dataclass ``cls`` for a form: metadata ``help``, ``choices``, ``min``/``max``; ``defaults``
    overrides field defaults; ``group`` keeps the fields whose metadata ``group`` matches (``"training"`` when
    unset), so long forms can be split into tabs."""
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if group is not None and meta.get("group", "training") != group:
            continue
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()  # type: ignore[operator]  # no default: the field has a factory
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        if "choices" in meta:
            kind = "choice"
        elif bool in args:
            kind = "bool"
        elif date in args or any(getattr(a, "__name__", "") == "datetime" for a in args):
            kind = "date"
        elif float in args and type(None) in args:
            kind = "optional_float"
        elif int in args or float in args:
            kind = "int" if int in args and float not in args else "float"
        elif any(typing.get_origin(a) in (Sequence, list, tuple) for a in args) or isinstance(default, tuple):
            kind = "sequence"
        else:
            kind = "text"
        out.append(
            FormField(
                f.name,
                f.name.replace("_", " ").capitalize(),
                meta.get("help"),
                default,
                kind,
                tuple(meta.get("choices", ())),
                meta.get("min"),
                meta.get("max"),
            )
        )
    return out


def form_value(field: FormField, value: Any) -> Any:
    """A form's raw value back in the field's type: numbers from strings or floats, a comma-separated text as a
    tuple, an empty text as None, a missing value as the default."""
    if value is None:
        return None if field.kind in ("optional_float", "date") else field.default
    if field.kind == "int":
        return int(value)
    if field.kind in ("float", "optional_float"):
        return float(value)
    if field.kind == "bool":
        return bool(value)
    if field.kind == "sequence":
        return (
            tuple(value)
            if isinstance(value, (list, tuple))
            else tuple(v.strip() for v in str(value).split(",") if v.strip())
        )
    if field.kind == "text":
        return str(value) or None if field.default is None else str(value)
    return value
