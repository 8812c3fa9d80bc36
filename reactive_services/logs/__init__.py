"""Log analytics: parse log lines, mine their templates, window them by event time, raise alerts.

One job per module, all re-exported here:

    _formats     line formats (:class:`LogFormat`, loghub notation, its problems) and event times
                 (:class:`TimestampReader`, :func:`apache_timestamp`, :func:`hdfs_timestamp`,
                 :func:`syslog_timestamp`, :func:`iso_utc`)
    _levels      levels: :data:`ERROR_LEVELS`, :func:`is_error`, :func:`infer_level`
    _miner       template mining, the default: :class:`LogMiner` (the project's own, streaming,
                 general settings), :class:`MinerSettings`
    _templates   template mining with drain3: :class:`DrainSettings`, :class:`TemplateMiner`,
                 :func:`make_miner` (the miner for a settings object)
    _events      :class:`LogEvent`, one parsed line
    _parsing     :class:`LogSource` (how to read one kind of log), :class:`LogParser`, :func:`read_lines`,
                 :data:`EMPTY_TEMPLATE` (the template of blank lines, which are not mined)
    _windows     :func:`window_stats`, the ``log.stats`` value of a window
    _alerts      :class:`AlertRules`, :class:`AlertDetector`, :func:`alert_for`, :func:`template_similarity`
    _pipeline    :func:`replay_logs`, :func:`build_pipeline`, :class:`WindowReport`, the ``logs`` record
                 (:class:`LogRecord`, :data:`LOG_RECORD`, :func:`check_log_record`)
    _service     :class:`LogAnalyticsService` (the Observer that publishes) and :class:`LogsController`
    _evaluation  grouping accuracy against a ground truth: :func:`grouping_accuracy`, :func:`evaluate_source`
    _analyze     one file through the whole service: :func:`analyze_file`, :func:`make_source`

Conventions: times are seconds since the Unix epoch (``float``; a time without a zone is read as
UTC); window lengths are seconds of event time; levels are kept as written in the line. A line
that does not parse is counted (``parsed=False``), never dropped. Which logs there are (their
formats and settings) is the application's: every function takes the sources as
``{name: LogSource}``.

Example::

    from reactive_services.logs import LogParser, LogSource

    parser = LogParser(LogSource(name="app", format="<Date> <Time> <Level> <Content>", component_field=None))
    event = parser.parse("2024-01-02 10:00:00 ERROR disk full on /dev/sda1", 1)
    event.level, event.template  # ('ERROR', 'disk full on <*>'); event.timestamp 1704189600.0
"""

from ._alerts import (
    DEFAULT_ALERT_MIN_LINES,
    DEFAULT_ALERT_THRESHOLD,
    AlertDetector,
    AlertRules,
    alert_for,
    template_similarity,
)
from ._analyze import analyze_file, detect_time, make_source, parse_mask, write_assignments
from ._evaluation import evaluate_source, grouping_accuracy, miner_settings, read_ground_truth
from ._events import EMPTY_TEMPLATE, EMPTY_TEMPLATE_ID, LogEvent
from ._formats import (
    DEFAULT_YEAR,
    TIME_FIELDS,
    TIME_PATTERNS,
    TIME_PATTERNS_NO_YEAR,
    YEAR_ROLLOVER_S,
    LogFormat,
    TimestampReader,
    apache_timestamp,
    has_year,
    hdfs_timestamp,
    iso_utc,
    syslog_timestamp,
)
from ._levels import ERROR_LEVELS, UNKNOWN_LEVEL, infer_level, is_error
from ._miner import DEFAULT_MINER_MASKING, MINER_STATE_VERSION, LogMiner, MinerSettings
from ._parsing import MAX_WINDOW_S, MAX_WINDOWS_PER_LINE, LogParser, LogSource, read_lines
from ._pipeline import (
    ALERT_TOPIC,
    LATE_TOPIC,
    LOG_RECORD,
    LOGS_TOPIC,
    MAX_LINE_CHARS,
    STATS_TOPIC,
    LogParsers,
    LogRecord,
    WindowReport,
    build_pipeline,
    check_log_record,
    replay_logs,
)
from ._records import LateLine, LogAlert, WindowStats
from ._service import Emit, LogAnalyticsService, LogsController, late_record
from ._templates import DEFAULT_MASKING, DrainSettings, TemplateMiner, make_miner
from ._windows import window_stats

__all__ = [
    "ALERT_TOPIC",
    "DEFAULT_ALERT_MIN_LINES",
    "DEFAULT_ALERT_THRESHOLD",
    "DEFAULT_MASKING",
    "DEFAULT_MINER_MASKING",
    "DEFAULT_YEAR",
    "EMPTY_TEMPLATE",
    "EMPTY_TEMPLATE_ID",
    "ERROR_LEVELS",
    "LATE_TOPIC",
    "LOGS_TOPIC",
    "LOG_RECORD",
    "MAX_LINE_CHARS",
    "MAX_WINDOWS_PER_LINE",
    "MAX_WINDOW_S",
    "MINER_STATE_VERSION",
    "STATS_TOPIC",
    "TIME_FIELDS",
    "TIME_PATTERNS",
    "TIME_PATTERNS_NO_YEAR",
    "UNKNOWN_LEVEL",
    "YEAR_ROLLOVER_S",
    "AlertDetector",
    "AlertRules",
    "DrainSettings",
    "Emit",
    "LateLine",
    "LogAlert",
    "LogAnalyticsService",
    "LogEvent",
    "LogFormat",
    "LogMiner",
    "LogParser",
    "LogParsers",
    "LogRecord",
    "LogSource",
    "LogsController",
    "MinerSettings",
    "TemplateMiner",
    "TimestampReader",
    "WindowReport",
    "WindowStats",
    "alert_for",
    "analyze_file",
    "apache_timestamp",
    "build_pipeline",
    "check_log_record",
    "detect_time",
    "evaluate_source",
    "grouping_accuracy",
    "has_year",
    "hdfs_timestamp",
    "infer_level",
    "is_error",
    "iso_utc",
    "late_record",
    "make_miner",
    "make_source",
    "miner_settings",
    "parse_mask",
    "read_ground_truth",
    "read_lines",
    "replay_logs",
    "syslog_timestamp",
    "template_similarity",
    "window_stats",
    "write_assignments",
]
