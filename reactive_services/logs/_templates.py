"""Template mining with drain3: :class:`TemplateMiner`, configured by :class:`DrainSettings`
(selectable beside the default, :class:`~reactive_services.logs.LogMiner`), and
:func:`make_miner`, the miner for a settings object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import drain3
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from ._miner import LogMiner, MinerSettings

# -- drain3 is chatty at INFO ("Starting Drain3 template miner"); keep that out of our logs ------


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _quiet_drain3() -> None:
    for name in ("drain3.template_miner", "drain3.template_miner_config"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _BelowWarning) for f in logger.filters):
            logger.addFilter(_BelowWarning())


_quiet_drain3()


#: Default drain3 masks, applied in this order before template mining: HDFS block ids (a
#: space-separated list of them is one ``<BLK>``: the list's length is a variable too), IPv4
#: addresses (with an optional :port), hex ids (``0x...``, or 8+ hex digits mixing letters and
#: digits), then standalone integers/decimals.
DEFAULT_MASKING: tuple[tuple[str, str], ...] = (
    (r"blk_-?\d+(?:\s+blk_-?\d+)*", "BLK"),
    (r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\d.])", "IP"),
    (r"\b0x[0-9a-fA-F]+\b", "HEX"),
    (r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b", "HEX"),
    (r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", "NUM"),
)


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """drain3 settings of one source.

    Raises ValueError at construction for a value out of range (the message starts with the field).

    Attributes:
        depth: depth of the Drain parse tree (>= 3; drain3 uses ``depth - 2`` prefix tokens).
        sim_th: similarity threshold in [0, 1] above which a line joins an existing cluster.
        max_children: maximum children of an inner tree node.
        masking: ``(regex, mask name)`` pairs applied in order; a match becomes ``<NAME>``.
    """

    depth: int = 4
    sim_th: float = 0.4
    max_children: int = 100
    masking: tuple[tuple[str, str], ...] = DEFAULT_MASKING

    def __post_init__(self) -> None:
        """Raises ValueError naming the field: depth < 3, sim_th outside [0, 1], max_children < 1."""
        if self.depth < 3:
            raise ValueError(f"depth must be >= 3 (drain3 uses depth - 2 prefix tokens), got {self.depth}")
        if not 0.0 <= self.sim_th <= 1.0:
            raise ValueError(f"sim_th must be in [0, 1], got {self.sim_th}")
        if self.max_children < 1:
            raise ValueError(f"max_children must be >= 1, got {self.max_children}")


class TemplateMiner:
    """drain3 template mining for one source: in memory, no persistence, quiet logging.

    Example:
        >>> miner = TemplateMiner(DrainSettings())
        >>> miner.add("connection from 10.0.0.1 port 22")[1]
        'connection from <IP> port <NUM>'
    """

    def __init__(self, settings: DrainSettings | None = None) -> None:
        settings = settings or DrainSettings()
        config = TemplateMinerConfig()
        config.drain_depth = settings.depth
        config.drain_sim_th = settings.sim_th
        config.drain_max_children = settings.max_children
        config.masking_instructions = [MaskingInstruction(pattern, name) for pattern, name in settings.masking]
        config.profiling_enabled = False
        self.settings = settings
        self._miner = drain3.TemplateMiner(persistence_handler=None, config=config)

    def add(self, content: str) -> tuple[int, str]:
        """Add one message; returns ``(cluster_id, template)``, the template as it stands now
        (later messages of the same cluster may generalise it further)."""
        result = self._miner.add_log_message(content)
        return int(result["cluster_id"]), str(result["template_mined"])

    def template(self, cluster_id: int) -> str | None:
        """The current template of a cluster, or None for an unknown id."""
        cluster = self._miner.drain.id_to_cluster.get(cluster_id)
        return None if cluster is None else str(cluster.get_template())

    @property
    def cluster_count(self) -> int:
        """How many templates (clusters) have been mined."""
        return len(self._miner.drain.clusters)

    def resolve(self, cluster_id: int) -> int:
        """``cluster_id`` itself: drain3 never merges clusters (same interface as :class:`LogMiner`)."""
        return cluster_id

    @property
    def merge_count(self) -> int:
        """Always 0: drain3 never merges clusters."""
        return 0

    @property
    def merges(self) -> dict[int, int]:
        """Always empty: drain3 never merges clusters."""
        return {}


def make_miner(settings: MinerSettings | DrainSettings | None = None) -> LogMiner | TemplateMiner:
    """The miner for a settings object: :class:`LogMiner` for :class:`MinerSettings` (or None),
    drain3's :class:`TemplateMiner` for :class:`DrainSettings`.

    Raises:
        TypeError: another kind of settings.
    """
    if settings is None or isinstance(settings, MinerSettings):
        return LogMiner(settings)
    if isinstance(settings, DrainSettings):
        return TemplateMiner(settings)
    raise TypeError(f"miner settings must be MinerSettings or DrainSettings, got {type(settings).__name__}")
