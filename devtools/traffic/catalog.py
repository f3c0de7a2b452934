"""The simulated system: services, their endpoints and the calls each endpoint makes.

Immutable data only. A call into another service names the callee's endpoint; the graph is acyclic
(gateways -> domain services -> databases and external APIs), so every trace is finite.
"""

from __future__ import annotations

from typing import NamedTuple


class Call(NamedTuple):
    """One outgoing call of a handler: a CLIENT span (or PRODUCER/INTERNAL), maybe answered by a service.

    A call into a service becomes a CLIENT span named like the callee's endpoint, labelled ``peer.service``,
    whose child is the callee's SERVER span; a leaf call carries its ``labels`` (``db.*``, ``server.address``,
    ...) and, for an external HTTP API, ``method`` and ``path``.
    """

    name: str
    target: str = ""  # short name of the callee service; "" for a database, cache or external API
    endpoint: str = ""  # the callee's endpoint name, e.g. "GET /users/{id}"
    median_ms: float = 2.0  # latency of a leaf call (no callee)
    kind: str = "CLIENT"
    probability: float = 1.0
    peer: str = ""  # "postgresql", "redis", "stripe", ...: picks the failure message
    labels: tuple[tuple[str, str], ...] = ()  # span labels of a leaf call, as instrumentations set them
    method: str = ""  # an external HTTP API's request: http_method, http_path (answered 200, or 503)
    path: str = ""


class Endpoint(NamedTuple):
    method: str
    route: str
    handler: str  # the INTERNAL span's name
    work_ms: float  # median time spent in the handler itself
    message: str  # what the handler logs on success
    calls: tuple[Call, ...] = ()
    status: int = 200

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}"


class Service(NamedTuple):
    short: str
    weight: float  # share of the traces that start here
    version: str
    endpoints: tuple[Endpoint, ...]
    epoch_timestamps: bool = False  # a legacy producer: epoch milliseconds instead of ISO strings
    lower_levels: bool = False  # "info", "warning" instead of "INFO", "WARN"

    @property
    def name(self) -> str:
        return f"{self.short}-service"


class Store(NamedTuple):
    """A database or cache: not instrumented, so its CLIENT spans have no SERVER child."""

    system: str  # db.system
    address: str  # server.address
    name: str = ""  # db.name (SQL databases; a Redis client sets none)


ORDERS_DB = Store("postgresql", "orders-db", "orders")
PAYMENTS_DB = Store("postgresql", "payments-db", "payments")
INVENTORY_DB = Store("postgresql", "inventory-db", "inventory")
USERS_DB = Store("postgresql", "users-db", "users")
BOARD_DB = Store("postgresql", "board-db", "board")
SHOP_DB = Store("postgresql", "shop-db", "shop")
CACHE = Store("redis", "redis-cache")
_STATEMENTS = {
    "SELECT": "SELECT * FROM {} WHERE id = $1",
    "INSERT": "INSERT INTO {} VALUES ($1, $2, $3)",
    "UPDATE": "UPDATE {} SET status = $1 WHERE id = $2",
}


def _db(store: Store, table: str, verb: str = "SELECT", median_ms: float = 1.8, probability: float = 1.0) -> Call:
    labels = (("db.system", store.system), ("db.name", store.name), ("db.operation", verb),
              ("db.statement", _STATEMENTS[verb].format(table)), ("server.address", store.address))
    return Call(f"{verb} {table}", median_ms=median_ms, probability=probability, peer=store.system, labels=labels)


def _cache(verb: str, probability: float = 1.0) -> Call:
    labels = (("db.system", CACHE.system), ("db.operation", verb), ("db.statement", f"{verb} ?"),
              ("server.address", CACHE.address))
    return Call(f"redis {verb}", median_ms=0.35, probability=probability, peer=CACHE.system, labels=labels)


def _api(method: str, host: str, path: str, median_ms: float, peer: str) -> Call:
    """A call to an external HTTP API (not instrumented): no SERVER child."""
    return Call(f"{method} {path}", median_ms=median_ms, peer=peer, labels=(("server.address", host),),
                method=method, path=path)


def _svc(target: str, endpoint: str, probability: float = 1.0) -> Call:
    return Call(endpoint, target=target, endpoint=endpoint, probability=probability)


ORDER = Service("order", 2.0, "3.14.2", (
    Endpoint("POST", "/orders", "OrderController.create", 3.0, "order created", (
        _svc("user", "GET /users/{id}"),
        _svc("inventory", "POST /inventory/reserve"),
        _svc("payment", "POST /payments/charge"),
        _db(ORDERS_DB, "orders", "INSERT", 2.5),
        _svc("notification", "POST /notifications/email", 0.7),
    ), status=201),
    Endpoint("GET", "/api/orders/{id}", "OrderController.findOne", 0.8, "order loaded", (
        _cache("GET"),
        _db(ORDERS_DB, "orders", probability=0.35),
    )),
    Endpoint("GET", "/api/v1/orders/{orderId}/items/{itemId}", "OrderItemController.findOne", 0.6,
             "order item loaded", (_db(ORDERS_DB, "order_items"),)),
))

PAYMENT = Service("payment", 1.0, "2.7.0", (
    Endpoint("POST", "/payments/charge", "PaymentController.charge", 2.0, "payment authorized", (
        _db(PAYMENTS_DB, "payment_methods"),
        _api("POST", "api.stripe.com", "/v1/charges", 140.0, "stripe"),
        _db(PAYMENTS_DB, "payments", "INSERT", 2.2),
    ), status=201),
    Endpoint("POST", "/api/payments/{paymentId}/refund", "PaymentController.refund", 1.5, "refund issued", (
        _db(PAYMENTS_DB, "payments"),
        _api("POST", "api.stripe.com", "/v1/refunds", 180.0, "stripe"),
        _db(PAYMENTS_DB, "payments", "UPDATE"),
    )),
))

INVENTORY = Service("inventory", 1.0, "1.22.5", (
    Endpoint("POST", "/inventory/reserve", "InventoryController.reserve", 1.0, "stock reserved", (
        _db(INVENTORY_DB, "stock", "UPDATE", 3.0),
        _cache("DEL"),
    )),
    Endpoint("GET", "/inventory/items/{sku}", "InventoryController.findItem", 0.4, "item availability read", (
        _cache("GET"),
        _db(INVENTORY_DB, "stock", probability=0.3),
    )),
))

USER = Service("user", 1.0, "5.0.3", (
    Endpoint("GET", "/users/{id}", "UserController.findOne", 0.3, "user loaded", (
        _cache("GET"),
        _db(USERS_DB, "users", probability=0.4),
    )),
    Endpoint("POST", "/auth/login", "AuthController.login", 1.0, "user logged in", (
        _db(USERS_DB, "users"),
        Call("bcrypt.compare", median_ms=45.0, kind="INTERNAL"),
        _cache("SET"),
    )),
))

NOTIFICATION = Service("notification", 0.5, "0.9.12", (
    Endpoint("POST", "/notifications/email", "EmailController.send", 0.5, "email queued", (
        Call("smtp SEND", median_ms=60.0, peer="smtp", labels=(("server.address", "smtp.mailgun.org"),)),
        Call("notifications.sent publish", median_ms=1.2, kind="PRODUCER", peer="kafka",
             labels=(("messaging.system", "kafka"), ("messaging.destination.name", "notifications.sent"))),
    ), status=202),
    Endpoint("POST", "/notifications/push", "PushController.send", 0.5, "push notification sent", (
        _api("POST", "fcm.googleapis.com", "/v1/projects/shop/messages:send", 90.0, "fcm"),
    ), status=202),
), lower_levels=True)

BOARD = Service("board", 2.0, "1.3.0", (
    Endpoint("GET", "/api/boards/{boardId}/posts/{postId}/comments", "CommentController.list", 1.2,
             "comments listed", (
                 _db(BOARD_DB, "comments", median_ms=4.0),
                 _svc("user", "GET /users/{id}"),
             )),
    Endpoint("POST", "/api/boards/{boardId}/posts", "PostController.create", 1.5, "post created", (
        _svc("user", "GET /users/{id}"),
        _db(BOARD_DB, "posts", "INSERT"),
        _svc("notification", "POST /notifications/push", 0.5),
    ), status=201),
), epoch_timestamps=True)

ECOMMERCE = Service("ecommerce", 3.0, "7.41.0", (
    Endpoint("GET", "/api/v1/shop/products/{productId}/reviews", "ReviewController.list", 1.0,
             "reviews listed", (
                 _svc("inventory", "GET /inventory/items/{sku}"),
                 _db(SHOP_DB, "reviews", median_ms=3.0),
                 _svc("user", "GET /users/{id}", 0.6),
             )),
    Endpoint("POST", "/api/v1/shop/checkout", "CheckoutController.checkout", 2.0, "checkout completed", (
        _svc("user", "POST /auth/login", 0.2),
        _svc("order", "POST /orders"),
    ), status=201),
    Endpoint("GET", "/api/v1/shop/orders/{id}", "ShopOrderController.findOne", 0.5, "order page rendered", (
        _svc("order", "GET /api/orders/{id}"),
        _svc("order", "GET /api/v1/orders/{orderId}/items/{itemId}", 0.5),
    )),
))

SERVICES: tuple[Service, ...] = (ORDER, PAYMENT, INVENTORY, USER, NOTIFICATION, BOARD, ECOMMERCE)
REGIONS = ("eu-west-1", "us-east-1", "ap-northeast-2")


def select_services(wanted: int | str | list[str] | tuple[str, ...] | None) -> tuple[Service, ...]:
    """The first N services, or those named ("order", "payment-service", ...); None means all."""
    if wanted is None:
        return SERVICES
    if isinstance(wanted, int):
        if not 1 <= wanted <= len(SERVICES):
            raise ValueError(f"--services must be between 1 and {len(SERVICES)}, got {wanted}")
        return SERVICES[:wanted]
    names = wanted.split(",") if isinstance(wanted, str) else list(wanted)
    by_name = {s.short: s for s in SERVICES} | {s.name: s for s in SERVICES}
    unknown = [n for n in names if n.strip() not in by_name]
    if unknown or not names:
        raise ValueError(f"unknown services {unknown}; known: {', '.join(s.short for s in SERVICES)}")
    return tuple(dict.fromkeys(by_name[n.strip()] for n in names))
