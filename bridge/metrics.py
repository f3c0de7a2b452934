"""The bridge's Prometheus metrics, on a registry of their own (one per Bridge, no module globals)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PROTOCOLS = ("websocket", "socketio")
DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class BridgeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.clients = Gauge("panopticon_bridge_clients", "Clients connected now", ["protocol"], registry=r)
        self.connections = Counter("panopticon_bridge_connections", "Clients accepted", ["protocol"],
                                   registry=r)
        self.disconnects = Counter("panopticon_bridge_disconnects", "Clients gone, by reason", ["reason"],
                                   registry=r)
        self.slow_clients = Counter("panopticon_bridge_slow_clients",
                                    "Clients told to go (1008) because their queue stayed full", registry=r)
        self.rejected = Counter("panopticon_bridge_rejected", "Connections refused before the upgrade",
                                ["reason"], registry=r)
        self.relayed = Counter("panopticon_bridge_relayed", "Errors read from the topic and fanned out",
                               registry=r)
        self.delivered = Counter("panopticon_bridge_delivered", "Errors written to client connections",
                                 registry=r)
        self.dropped = Counter("panopticon_bridge_dropped", "Errors dropped from full client queues (oldest)",
                               registry=r)
        self.filtered = Counter("panopticon_bridge_filtered", "Errors not sent to a client by its filters",
                                registry=r)
        self.malformed = Counter("panopticon_bridge_malformed", "Topic records skipped as malformed",
                                 registry=r)
        self.delay = Histogram("panopticon_bridge_delivery_delay_seconds",
                               "From reading an error off the topic to writing it to a client (per write)",
                               buckets=DELAY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("panopticon_bridge_consumer_lag", "Records on the topic not yet read",
                                  registry=r)
        for protocol in PROTOCOLS:
            self.clients.labels(protocol)
            self.connections.labels(protocol)

    def render(self) -> bytes:
        return generate_latest(self.registry)
