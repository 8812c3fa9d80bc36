"""The shop's log sources: the four loghub samples it ships (Apache, HDFS, Linux, OpenSSH), their
formats and settings (:data:`SOURCES`), their files (:func:`default_files`) and Drain's published
accuracy on them (:data:`DRAIN_PUBLISHED`).

Data: ``examples/shop/data/loghub/`` holds the 2k-line samples from loghub
(https://github.com/logpai/loghub; see the LICENSE and README.md there).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reactive_services.logs import LogSource, apache_timestamp, hdfs_timestamp, syslog_timestamp

__all__ = [
    "DATA_DIR",
    "DRAIN_PUBLISHED",
    "LINUX_DEFAULT_YEAR",
    "OPENSSH_DEFAULT_YEAR",
    "SOURCES",
    "default_files",
]

#: Folder of the shipped loghub samples (``<Name>_2k.log`` and their ``_structured.csv``).
DATA_DIR = Path(__file__).resolve().parent / "data" / "loghub"

#: loghub's Linux sample (``/var/log/messages``, lines like ``Jun 14 15:16:01``) has no year.
#: Assumed 2005: the loghub README does not state it; the sample comes from the same
#: log-sharing collection period as the Apache sample, which is dated 2005.
LINUX_DEFAULT_YEAR = 2005
#: loghub's OpenSSH sample (``Dec 10 06:55:46``) has no year and the loghub README gives none
#: ("collected from an OpenSSH server in our lab over a period of 28+ days"). Assumed 2015.
OPENSSH_DEFAULT_YEAR = 2015


#: The four shipped sources, with the loghub benchmark formats (Zhu et al., ICSE-SEIP 2019) and
#: the general template-miner settings (the default :class:`reactive_services.logs.LogMiner`, no
#: per-source tuning). Grouping accuracy against the loghub ground truth:
#: ``python bench/log_accuracy.py``.
SOURCES: Mapping[str, LogSource] = {
    source.name: source
    for source in (
        LogSource(
            name="Apache",
            format=r"\[<Time>\] \[<Level>\] <Content>",
            timestamp=apache_timestamp,
            component_field=None,
        ),
        LogSource(
            name="HDFS",
            format="<Date> <Time> <Pid> <Level> <Component>: <Content>",
            timestamp=hdfs_timestamp,
        ),
        # loghub calls the host name ("combo") <Level>: it is not a level, so levels are inferred.
        LogSource(
            name="Linux",
            format=r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
            timestamp=syslog_timestamp("Month", "Date", "Time", year=LINUX_DEFAULT_YEAR),
            year=LINUX_DEFAULT_YEAR,  # kept when a time_format replaces the timestamp (make_source)
            level_field=None,
        ),
        # loghub's <Component> here is the host name ("LabSZ"); the component is always sshd.
        LogSource(
            name="OpenSSH",
            format=r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
            timestamp=syslog_timestamp("Date", "Day", "Time", year=OPENSSH_DEFAULT_YEAR),
            year=OPENSSH_DEFAULT_YEAR,  # kept when a time_format replaces the timestamp (make_source)
            level_field=None,
            component_field=None,
        ),
    )
}


def default_files(data_dir: Path = DATA_DIR) -> dict[str, Path]:
    """``{source name: path of its <name>_2k.log}`` for the shipped sources."""
    return {name: data_dir / f"{name}_2k.log" for name in SOURCES}


#: Grouping accuracy of Drain (He et al., ICWS 2017) on the loghub 2k samples, as published in
#: the benchmark table of logpai/logparser's ``logparser/Drain/README.md`` ("Running the
#: benchmark script on Loghub_2k datasets, you could obtain the following results"; the
#: "Accuracy" column), i.e. the same measure as
#: :func:`reactive_services.logs.grouping_accuracy` on the same files.
DRAIN_PUBLISHED: dict[str, float] = {"Apache": 1.0, "HDFS": 0.9975, "OpenSSH": 0.7875, "Linux": 0.69}
