"""The ports the rest of core sees the studio through: what a lower layer needs of the process, declared here,
implemented by ``core.studio.Studio`` (checked by mypy wherever a Studio is passed in).

``Host``       the database and the settings: what labeling, chain and worker code reads
``ModelHost``  a Host that also holds the model: generation, scoring, evaluation and judging run through it

Serving never reaches training through a port: ``share_cpu`` is the studio's (it asks a running job to lend a
core before generating); the caller only knows that the host shares the CPU fairly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from core.config import Settings
    from core.serving.engine import Engine
    from core.serving.generate import PairUpdate, SamplingParams
    from storage.db import Database


class Host(Protocol):
    """The studio as most of core needs it."""

    @property
    def db(self) -> Database: ...

    @property
    def settings(self) -> Settings: ...


class ModelHost(Host, Protocol):
    """The studio as generation, scoring, evaluation and judging need it: the shared model, its adapters, an
    external engine when one is set, and fair use of the CPU while a job trains."""

    @property
    def engine(self) -> Engine | None: ...

    @property
    def model_path(self) -> Path | str: ...

    def model(self) -> tuple[Any, Any]:
        """(model, tokenizer) of the base, loaded once and shared."""
        ...

    def adapter_rows(
        self, policy_a: str, policy_b: str
    ) -> tuple[tuple[str | None, str | None] | None, tuple[int, int]]:
        """Both versions' adapters made available on the shared model: (per-row adapter names, version ids)."""
        ...

    def pair_stream(
        self,
        messages: list[dict[str, str]],
        sampling: SamplingParams,
        policy_a: str,
        policy_b: str,
        *,
        seed: int | None = None,
        interval: float | Callable[[], float] = 0.0,
    ) -> tuple[Iterator[PairUpdate], tuple[int, int]]:
        """Two answers of two versions, streamed; also the versions' ids."""
        ...

    def share_cpu(self) -> None:
        """Before generating: leave a running training job the cores it needs, use the rest."""
        ...
