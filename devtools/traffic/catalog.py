"""The simulated system: services, their endpoints and the calls each endpoint makes.

Immutable data only. A call into another service names the callee's endpoint; the graph is acyclic
(gateways -> domain services -> databases and external APIs), so every trace is finite.
"""

from __future__ import annotations

from typing import NamedTuple


class Call(NamedTuple):
    """One outgoing call of a handler: a CLIENT span (or PRODUCER/INTERNAL), maybe answered by a service."""

    name: str
    target: str = ""  # short name of the callee service; "" for a database, cache or external API
    endpoint: str = ""  # the callee's endpoint name, e.g. "GET /users/{id}"
    median_ms: float = 2.0  # latency of a leaf call (no callee)
    kind: str = "CLIENT"
    probability: float = 1.0
    peer: str = ""  # "postgresql", "redis", "stripe", ...: a label on the span


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


def _db(table: str, verb: str = "SELECT", median_ms: float = 1.8, probability: float = 1.0) -> Call:
    return Call(f"{verb} {table}", median_ms=median_ms, probability=probability, peer="postgresql")


def _cache(verb: str, probability: float = 1.0) -> Call:
    return Call(f"redis {verb}", median_ms=0.35, probability=probability, peer="redis")


def _svc(target: str, endpoint: str, probability: float = 1.0) -> Call:
    return Call(f"{target}-service {endpoint}", target=target, endpoint=endpoint, probability=probability)


ORDER = Service("order", 2.0, "3.14.2", (
    Endpoint("POST", "/orders", "OrderController.create", 3.0, "order created", (
        _svc("user", "GET /users/{id}"),
        _svc("inventory", "POST /inventory/reserve"),
        _svc("payment", "POST /payments/charge"),
        _db("orders", "INSERT", 2.5),
        _svc("notification", "POST /notifications/email", 0.7),
    ), status=201),
    Endpoint("GET", "/api/orders/{id}", "OrderController.findOne", 0.8, "order loaded", (
        _cache("GET"),
        _db("orders", probability=0.35),
    )),
    Endpoint("GET", "/api/v1/orders/{orderId}/items/{itemId}", "OrderItemController.findOne", 0.6,
             "order item loaded", (_db("order_items"),)),
))

PAYMENT = Service("payment", 1.0, "2.7.0", (
    Endpoint("POST", "/payments/charge", "PaymentController.charge", 2.0, "payment authorized", (
        _db("payment_methods"),
        Call("POST api.stripe.com/v1/charges", median_ms=140.0, peer="stripe"),
        _db("payments", "INSERT", 2.2),
    ), status=201),
    Endpoint("POST", "/api/payments/{paymentId}/refund", "PaymentController.refund", 1.5, "refund issued", (
        _db("payments"),
        Call("POST api.stripe.com/v1/refunds", median_ms=180.0, peer="stripe"),
        _db("payments", "UPDATE"),
    )),
))

INVENTORY = Service("inventory", 1.0, "1.22.5", (
    Endpoint("POST", "/inventory/reserve", "InventoryController.reserve", 1.0, "stock reserved", (
        _db("stock", "UPDATE", 3.0),
        _cache("DEL"),
    )),
    Endpoint("GET", "/inventory/items/{sku}", "InventoryController.findItem", 0.4, "item availability read", (
        _cache("GET"),
        _db("stock", probability=0.3),
    )),
))

USER = Service("user", 1.0, "5.0.3", (
    Endpoint("GET", "/users/{id}", "UserController.findOne", 0.3, "user loaded", (
        _cache("GET"),
        _db("users", probability=0.4),
    )),
    Endpoint("POST", "/auth/login", "AuthController.login", 1.0, "user logged in", (
        _db("users"),
        Call("bcrypt.compare", median_ms=45.0, kind="INTERNAL"),
        _cache("SET"),
    )),
))

NOTIFICATION = Service("notification", 0.5, "0.9.12", (
    Endpoint("POST", "/notifications/email", "EmailController.send", 0.5, "email queued", (
        Call("smtp SEND", median_ms=60.0, peer="smtp"),
        Call("notifications.sent publish", median_ms=1.2, kind="PRODUCER", peer="kafka"),
    ), status=202),
    Endpoint("POST", "/notifications/push", "PushController.send", 0.5, "push notification sent", (
        Call("POST fcm.googleapis.com/v1/projects/shop/messages:send", median_ms=90.0, peer="fcm"),
    ), status=202),
), lower_levels=True)

BOARD = Service("board", 2.0, "1.3.0", (
    Endpoint("GET", "/api/boards/{boardId}/posts/{postId}/comments", "CommentController.list", 1.2,
             "comments listed", (
                 _db("comments", median_ms=4.0),
                 _svc("user", "GET /users/{id}"),
             )),
    Endpoint("POST", "/api/boards/{boardId}/posts", "PostController.create", 1.5, "post created", (
        _svc("user", "GET /users/{id}"),
        _db("posts", "INSERT"),
        _svc("notification", "POST /notifications/push", 0.5),
    ), status=201),
), epoch_timestamps=True)

ECOMMERCE = Service("ecommerce", 3.0, "7.41.0", (
    Endpoint("GET", "/api/v1/shop/products/{productId}/reviews", "ReviewController.list", 1.0,
             "reviews listed", (
                 _svc("inventory", "GET /inventory/items/{sku}"),
                 _db("reviews", median_ms=3.0),
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
