"""Synthetic APM traffic: realistic traces of spans and logs as Kafka records, with known facts.

Pure and importable (no I/O): ``generate(...)`` yields ``Record`` s; ``common.loadgen`` produces them.
"""

from panopticon.devtools.traffic.catalog import SERVICES, select_services
from panopticon.devtools.traffic.generator import Config, Generator, generate
from panopticon.devtools.traffic.record import Record, Topic

__all__ = ["SERVICES", "Config", "Generator", "Record", "Topic", "generate", "select_services"]
