"""The AWS Price List (``GetProducts``): parsing, unit normalisation, effective-dated storage.

``GetProducts`` pages with ``NextToken``; each ``PriceList`` entry is a JSON
document *inside a string* (decode twice). One product carries one or more
terms (``terms.OnDemand.<sku>.<offerTermCode>``), each with one or more price
dimensions (``priceDimensions.<rateCode>``). One :class:`PriceRow` is one price
dimension of one on-demand term.

Prices are stored as published (``unit``, ``price_usd``) *and* normalised
(``normalized_unit``, ``usd_per_unit``): ``'token'`` with the price of one
token, ``'hour'`` with the price of one instance-hour. "1K tokens" and
"Million ... Tokens" can then never be confused downstream.

``raw.aws_price_list`` is effective-dated on (sku, offer_term_code, rate_code):
a refresh adds a row only when the published price (or unit) changed, and
closes the previous row. When the API fails, the last good prices stay and are
marked ``stale``; the failed pull is recorded in ``raw.aws_price_list_pulls``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

import botocore.exceptions
import botocore.loaders
import psycopg

from spancost.errors import SpancostError

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

FORMAT_VERSION = "aws_v1"
# Term types a query keeps by default. Reserved and savings terms are not list prices of usage.
ON_DEMAND = "OnDemand"


class PriceListError(SpancostError, ValueError):
    """A GetProducts item could not be parsed; the message names the sku and the field."""


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class PriceFilter:
    """One ``GetProducts`` filter on ``Field`` (a product attribute, or ``ServiceCode``)."""

    field: str
    value: str
    type: str = "TERM_MATCH"

    def to_api(self) -> dict[str, str]:
        return {"Type": self.type, "Field": self.field, "Value": self.value}


@dataclass(frozen=True)
class ProductQuery:
    """What to pull: a service code, API filters, and checks the API filters cannot express.

    ``instance_type_pattern`` is a regular expression matched (``re.match``) at
    parse time against ``instanceType`` (or ``instanceName``); products without
    a matching attribute are dropped. ``term_types`` keeps only those terms.
    """

    name: str
    service_code: str
    filters: tuple[PriceFilter, ...] = ()
    instance_type_pattern: str | None = None
    term_types: tuple[str, ...] = (ON_DEMAND,)

    def api_filters(self) -> list[dict[str, str]]:
        return [f.to_api() for f in self.filters]

    def in_region(self, region_code: str) -> ProductQuery:
        """The same query limited to one region (``regionCode`` TERM_MATCH)."""
        kept = tuple(f for f in self.filters if f.field != "regionCode")
        return replace(
            self,
            name=f"{self.name}@{region_code}",
            filters=(*kept, PriceFilter("regionCode", region_code)),
        )

    @property
    def region_code(self) -> str | None:
        for f in self.filters:
            if f.field == "regionCode" and f.type in ("TERM_MATCH", "EQUALS"):
                return f.value
        return None

    def keeps(self, attributes: Mapping[str, str]) -> bool:
        if self.instance_type_pattern is None:
            return True
        instance = attributes.get("instanceType") or attributes.get("instanceName") or ""
        return re.match(self.instance_type_pattern, instance) is not None


SAGEMAKER_INSTANCES = ProductQuery(
    name="sagemaker-instances",
    service_code="AmazonSageMaker",
    filters=(PriceFilter("productFamily", "ML Instance"),),
)
EC2_GPU_INSTANCES = ProductQuery(
    name="ec2-gpu-instances",
    service_code="AmazonEC2",
    filters=(
        PriceFilter("productFamily", "Compute Instance"),
        PriceFilter("operatingSystem", "Linux"),
        PriceFilter("tenancy", "Shared"),
        PriceFilter("capacitystatus", "Used"),
        PriceFilter("preInstalledSw", "NA"),
    ),
    # GPU and ML-accelerator families: p4d, p5, g5, g6e, g5g, gr6, trn1, trn2, inf2, ...
    instance_type_pattern=r"(p|g|trn|inf)[a-z]?\d",
)
BEDROCK = ProductQuery(name="bedrock", service_code="AmazonBedrock")
BEDROCK_FOUNDATION_MODELS = ProductQuery(
    name="bedrock-foundation-models", service_code="AmazonBedrockFoundationModels"
)
DEFAULT_QUERIES: tuple[ProductQuery, ...] = (
    SAGEMAKER_INSTANCES,
    EC2_GPU_INSTANCES,
    BEDROCK,
    BEDROCK_FOUNDATION_MODELS,
)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class PriceRow:
    """One price dimension of one term of one product, as published and normalised."""

    service_code: str
    sku: str
    term_type: str
    offer_term_code: str
    rate_code: str
    region_code: str | None
    usage_type: str | None
    operation: str | None
    product_family: str | None
    item_name: str | None
    token_kind: str | None
    attributes: Mapping[str, str]
    description: str | None
    unit: str
    price_usd: Decimal
    normalized_unit: str | None
    usd_per_unit: Decimal | None
    begin_range: Decimal | None
    end_range: Decimal | None
    effective_from: datetime
    publication_date: datetime | None
    version: str | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.sku, self.offer_term_code, self.rate_code)


@dataclass(frozen=True)
class NormalizedPrice:
    unit: str
    usd_per_unit: Decimal


_HOUR_UNITS = frozenset({"hrs", "hr", "hour", "hours"})
_SCALES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"\b(1m|1,000,000|million)\b"), 6),
    (re.compile(r"\b(1k|1,000|thousand)\b"), 3),
)
_TOKENS = re.compile(r"\btokens?\b")
_TOKEN_USAGE = re.compile(r"tokencount", re.IGNORECASE)


def _scale(text: str) -> int | None:
    for pattern, exponent in _SCALES:
        if pattern.search(text):
            return exponent
    return None


def normalize_price(
    unit: str, price_usd: Decimal, description: str | None, usage_type: str | None
) -> NormalizedPrice | None:
    """The price of one token or one hour, exactly; None when the unit is not one of those.

    - ``Hrs``/``Hour`` → ``hour``, unchanged.
    - ``1K tokens`` → ``token``, divided by 1,000; ``1M tokens`` by 1,000,000.
    - ``Units`` whose description says "Million ... Tokens" (Bedrock Marketplace
      models) → ``token``, divided by 1,000,000. A token usage type whose scale
      the description does not state is *not* guessed: None.
    Division is a decimal shift (``scaleb``), so it is exact.
    """
    text = unit.strip().lower()
    if text in _HOUR_UNITS:
        return NormalizedPrice("hour", price_usd)
    if _TOKENS.search(text):
        exponent = _scale(text)
        if exponent is None and re.fullmatch(r"tokens?", text) is None:
            return None
        return NormalizedPrice("token", price_usd.scaleb(-(exponent or 0)))
    if text in ("units", "unit"):
        desc = (description or "").lower()
        if _TOKENS.search(desc) or _TOKEN_USAGE.search(usage_type or ""):
            exponent = _scale(desc)
            if exponent is None:
                return None
            return NormalizedPrice("token", price_usd.scaleb(-exponent))
    return None


def token_kind(attributes: Mapping[str, str], description: str | None) -> str | None:
    """``input``, ``output``, ``cache_read`` or ``cache_write`` for a token price, else None."""
    usage = attributes.get("usagetype", "")
    text = " ".join(
        (attributes.get("inferenceType", ""), usage.rsplit(":", 1)[-1], description or "")
    ).lower()
    if "token" not in text:
        return None
    if "cache" in text and "read" in text:
        return "cache_read"
    if "cache" in text and "write" in text:
        return "cache_write"
    if "input" in text:
        return "input"
    if "output" in text:
        return "output"
    return None


_EDITION_SUFFIX = " (Amazon Bedrock Edition)"


def item_name(attributes: Mapping[str, str]) -> str | None:
    """What the price is for: the model, or the instance type."""
    for name in ("model", "instanceName", "instanceType"):
        if attributes.get(name):
            return attributes[name]
    servicename = attributes.get("servicename", "")
    if servicename.endswith(_EDITION_SUFFIX):
        return servicename[: -len(_EDITION_SUFFIX)]
    return None


@cache
def _region_by_location() -> dict[str, str]:
    """Price List ``location`` names → region codes, from botocore's endpoint data."""
    data = botocore.loaders.create_loader().load_data("endpoints")
    names: dict[str, str] = {}
    for partition in data["partitions"]:
        for code, region in partition["regions"].items():
            description = region.get("description")
            if description:
                names[description] = code
                # The Price List still says "EU (Ireland)" where botocore says "Europe (Ireland)".
                if description.startswith("Europe ("):
                    names["EU " + description.removeprefix("Europe ")] = code
    return names


def region_code(attributes: Mapping[str, str]) -> str | None:
    """``regionCode`` when present; otherwise the region named by ``location``."""
    if attributes.get("regionCode"):
        return attributes["regionCode"]
    return _region_by_location().get(attributes.get("location", ""))


def _timestamp(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise PriceListError(f"{where}: expected an ISO 8601 timestamp, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PriceListError(f"{where}: not an ISO 8601 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _decimal(value: object, where: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise PriceListError(f"{where}: not a decimal number: {value!r}") from exc
    if not number.is_finite():
        raise PriceListError(f"{where}: not a finite number: {value!r}")
    return number


def _range_end(value: object, where: str) -> Decimal | None:
    if value is None or value == "Inf":
        return None
    return _decimal(value, where)


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PriceListError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def decode_item(item: str | Mapping[str, Any], where: str = "PriceList item") -> Mapping[str, Any]:
    """A ``PriceList`` entry as a dict: the API sends each one as a JSON string."""
    if isinstance(item, str):
        try:
            item = json.loads(item)
        except json.JSONDecodeError as exc:
            raise PriceListError(f"{where}: not JSON: {exc}") from exc
    return _mapping(item, where)


def parse_item(item: str | Mapping[str, Any], query: ProductQuery | None = None) -> list[PriceRow]:
    """The price rows of one ``PriceList`` entry (the JSON string or its decoded form).

    Only the query's term types are kept (on-demand by default), only USD prices,
    and nothing when the query's parse-time checks reject the product.
    """
    document = decode_item(item)
    product = _mapping(document.get("product"), "PriceList item: product")
    sku = product.get("sku")
    if not isinstance(sku, str) or not sku:
        raise PriceListError("PriceList item: product.sku is missing")
    where = f"sku {sku}"
    raw_attributes = _mapping(product.get("attributes", {}), f"{where}: product.attributes")
    attributes = {str(k): str(v) for k, v in raw_attributes.items()}
    term_types = query.term_types if query is not None else (ON_DEMAND,)
    if query is not None and not query.keeps(attributes):
        return []
    fallback = query.service_code if query is not None else None
    service_code = document.get("serviceCode") or attributes.get("servicecode") or fallback
    if not isinstance(service_code, str) or not service_code:
        raise PriceListError(f"{where}: serviceCode is missing")
    publication = document.get("publicationDate")
    publication_date = _timestamp(publication, f"{where}: publicationDate") if publication else None
    version = document.get("version")
    terms = _mapping(document.get("terms", {}), f"{where}: terms")
    rows: list[PriceRow] = []
    for term_type in term_types:
        offers = _mapping(terms.get(term_type, {}), f"{where}: terms.{term_type}")
        for term_key, term_value in offers.items():
            term = _mapping(term_value, f"{where}: terms.{term_type}.{term_key}")
            rows.extend(
                _term_rows(
                    term,
                    term_type=term_type,
                    term_key=str(term_key),
                    sku=sku,
                    service_code=service_code,
                    attributes=attributes,
                    product_family=product.get("productFamily"),
                    publication_date=publication_date,
                    version=str(version) if version is not None else None,
                )
            )
    return rows


def _term_rows(
    term: Mapping[str, Any],
    *,
    term_type: str,
    term_key: str,
    sku: str,
    service_code: str,
    attributes: Mapping[str, str],
    product_family: object,
    publication_date: datetime | None,
    version: str | None,
) -> Iterator[PriceRow]:
    where = f"sku {sku}: terms.{term_type}.{term_key}"
    offer_term_code = str(term.get("offerTermCode") or term_key.rsplit(".", 1)[-1])
    effective_from = _timestamp(term.get("effectiveDate"), f"{where}.effectiveDate")
    dimensions = _mapping(term.get("priceDimensions", {}), f"{where}.priceDimensions")
    for dim_key, dim_value in dimensions.items():
        dim_where = f"{where}.priceDimensions.{dim_key}"
        dimension = _mapping(dim_value, dim_where)
        prices = _mapping(dimension.get("pricePerUnit", {}), f"{dim_where}.pricePerUnit")
        if "USD" not in prices:
            log.debug("%s has no USD price (%s); skipped", dim_where, ", ".join(prices))
            continue
        price = _decimal(prices["USD"], f"{dim_where}.pricePerUnit.USD")
        unit = dimension.get("unit")
        if not isinstance(unit, str):
            raise PriceListError(f"{dim_where}.unit is missing")
        description = dimension.get("description")
        description = str(description) if description is not None else None
        usage_type = attributes.get("usagetype")
        normalized = normalize_price(unit, price, description, usage_type)
        begin = dimension.get("beginRange")
        yield PriceRow(
            service_code=service_code,
            sku=sku,
            term_type=term_type,
            offer_term_code=offer_term_code,
            rate_code=str(dimension.get("rateCode") or dim_key),
            region_code=region_code(attributes),
            usage_type=usage_type,
            operation=attributes.get("operation"),
            product_family=str(product_family) if product_family else None,
            item_name=item_name(attributes),
            token_kind=token_kind(attributes, description),
            attributes=attributes,
            description=description,
            unit=unit,
            price_usd=price,
            normalized_unit=normalized.unit if normalized else None,
            usd_per_unit=normalized.usd_per_unit if normalized else None,
            begin_range=_decimal(begin, f"{dim_where}.beginRange") if begin is not None else None,
            end_range=_range_end(dimension.get("endRange"), f"{dim_where}.endRange"),
            effective_from=effective_from,
            publication_date=publication_date,
            version=version,
        )


def parse_response(
    response: Mapping[str, Any], query: ProductQuery | None = None
) -> list[PriceRow]:
    """The price rows of one ``GetProducts`` response page."""
    rows: list[PriceRow] = []
    for index, item in enumerate(response.get("PriceList", [])):
        try:
            rows.extend(parse_item(item, query))
        except PriceListError as exc:
            raise PriceListError(f"PriceList[{index}]: {exc}") from exc
    return rows


# --------------------------------------------------------------------------- fetching


def iter_pages(
    client: Any, query: ProductQuery, *, page_size: int | None = None
) -> Iterator[Mapping[str, Any]]:
    """Every ``GetProducts`` response page for the query, following ``NextToken`` to the end."""
    request: dict[str, Any] = {
        "ServiceCode": query.service_code,
        "Filters": query.api_filters(),
        "FormatVersion": FORMAT_VERSION,
    }
    if page_size is not None:
        request["MaxResults"] = page_size
    token: str | None = None
    while True:
        page: Mapping[str, Any] = client.get_products(
            **request, **({"NextToken": token} if token else {})
        )
        yield page
        token = page.get("NextToken")
        if not token:
            return


@dataclass
class Fetched:
    """The parsed rows of a pull so far, and how many pages and items it took."""

    rows: list[PriceRow] = field(default_factory=list)
    pages: int = 0
    items: int = 0


def fetch(
    client: Any, query: ProductQuery, *, page_size: int | None = None, into: Fetched | None = None
) -> Fetched:
    """Every page of the query, parsed. Raises on any API or parse error.

    ``into`` receives the pages as they arrive, so a caller still knows how far a
    failed pull got.
    """
    fetched = into if into is not None else Fetched()
    for page in iter_pages(client, query, page_size=page_size):
        fetched.pages += 1
        fetched.items += len(page.get("PriceList", []))
        fetched.rows.extend(parse_response(page, query))
    log.info(
        "price list %s: %d items, %d rows, %d pages",
        query.name,
        fetched.items,
        len(fetched.rows),
        fetched.pages,
    )
    return fetched


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh of one query did. ``pages`` is the number of GetProducts requests
    that succeeded (the API request count for the caller's log)."""

    pull_id: int
    query_name: str
    service_code: str
    status: str
    pages: int = 0
    items: int = 0
    rows_seen: int = 0
    rows_inserted: int = 0
    rows_closed: int = 0
    rows_marked_stale: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Pulled to the last page: merged, or landed for its audit (write-audit-publish)."""
        return self.status in ("succeeded", "landed")


_ROW_COLUMNS: tuple[str, ...] = (
    "service_code",
    "sku",
    "term_type",
    "offer_term_code",
    "rate_code",
    "region_code",
    "usage_type",
    "operation",
    "product_family",
    "item_name",
    "token_kind",
    "attributes",
    "description",
    "unit",
    "price_usd",
    "normalized_unit",
    "usd_per_unit",
    "begin_range",
    "end_range",
    "effective_from",
    "publication_date",
    "version",
)

_INCOMING_DDL = f"""
create temporary table price_list_incoming as
select {", ".join(_ROW_COLUMNS)}, pull_id, last_seen_pull_id, fetched_at
from raw.aws_price_list
with no data
"""


def _copy_values(row: PriceRow) -> tuple[object, ...]:
    values: list[object] = []
    for name in _ROW_COLUMNS:
        value = getattr(row, name)
        if name == "attributes":
            value = json.dumps(dict(value), sort_keys=True)
        values.append(value)
    return tuple(values)


def _start_pull(conn: Conn, query: ProductQuery, now: datetime) -> int:
    with conn.transaction():
        found = conn.execute(
            """
            insert into raw.aws_price_list_pulls
                (query_name, service_code, filters, status, started_at)
            values (%s, %s, %s::jsonb, 'running', %s)
            returning pull_id
            """,
            (query.name, query.service_code, json.dumps(query.api_filters()), now),
        ).fetchone()
    assert found is not None
    return int(found[0])


def _finished(now: datetime, started: float) -> datetime:
    return now + timedelta(seconds=time.monotonic() - started)


def store(
    conn: Conn, rows: Sequence[PriceRow], *, pull_id: int, fetched_at: datetime
) -> tuple[int, int]:
    """Merge parsed rows into ``raw.aws_price_list``; returns (inserted, closed).

    Per (sku, offer_term_code, rate_code): no open row → insert; open row with
    the same price and unit → confirmed (``stale`` cleared); a different price
    or unit → the open row is closed and a new one opens. The new row starts at
    the term's ``effectiveDate``, or at ``fetched_at`` when that date is not
    after the start of the row it replaces. A closed row is history: its
    ``stale`` flag is cleared. Products missing from the pull are left open as
    they were (a narrowed query must not end prices). Run inside a transaction.
    """
    unique: dict[tuple[str, str, str], PriceRow] = {row.key: row for row in rows}
    if len(unique) < len(rows):
        log.warning("pull %d: %d duplicate price rows ignored", pull_id, len(rows) - len(unique))
    _new_incoming(conn)
    columns = ", ".join(_ROW_COLUMNS)
    with conn.cursor() as cur:
        with cur.copy(f"copy price_list_incoming ({columns}) from stdin") as copy:
            for row in unique.values():
                copy.write_row(_copy_values(row))
    conn.execute(
        "update price_list_incoming set pull_id = %s, last_seen_pull_id = %s, fetched_at = %s",
        (pull_id, pull_id, fetched_at),
    )
    return _merge_incoming(conn)


def _lock_service(conn: Conn, service_code: str) -> None:
    """Hold the service's price-list lock to the end of the transaction: one merge at a time."""
    conn.execute(
        "select pg_advisory_xact_lock(hashtext('spancost.price_list'), hashtext(%s))",
        (service_code,),
    )


def _new_incoming(conn: Conn) -> None:
    """An empty temporary ``price_list_incoming``, what :func:`_merge_incoming` merges."""
    conn.execute("drop table if exists price_list_incoming")
    conn.execute(_INCOMING_DDL)


def _merge_incoming(conn: Conn) -> tuple[int, int]:
    """Merge the temporary table ``price_list_incoming`` (one row per key); see :func:`store`."""
    columns = ", ".join(_ROW_COLUMNS)
    # A changed price whose published effectiveDate does not move forward starts when seen.
    conn.execute(
        """
        update price_list_incoming as incoming
        set effective_from = greatest(incoming.fetched_at, current_row.effective_from)
        from raw.aws_price_list as current_row
        where current_row.sku = incoming.sku
          and current_row.offer_term_code = incoming.offer_term_code
          and current_row.rate_code = incoming.rate_code
          and current_row.effective_to is null
          and (current_row.price_usd, current_row.unit)
              is distinct from (incoming.price_usd, incoming.unit)
          and incoming.effective_from <= current_row.effective_from
        """
    )
    closed = conn.execute(
        """
        update raw.aws_price_list as current_row
        set effective_to = incoming.effective_from, stale = false
        from price_list_incoming as incoming
        where current_row.sku = incoming.sku
          and current_row.offer_term_code = incoming.offer_term_code
          and current_row.rate_code = incoming.rate_code
          and current_row.effective_to is null
          and (current_row.price_usd, current_row.unit)
              is distinct from (incoming.price_usd, incoming.unit)
        """
    ).rowcount
    conn.execute(
        """
        update raw.aws_price_list as current_row
        set stale = false, last_seen_pull_id = incoming.pull_id, last_seen_at = incoming.fetched_at
        from price_list_incoming as incoming
        where current_row.sku = incoming.sku
          and current_row.offer_term_code = incoming.offer_term_code
          and current_row.rate_code = incoming.rate_code
          and current_row.effective_to is null
        """
    )
    inserted = conn.execute(
        f"""
        insert into raw.aws_price_list
            ({columns}, pull_id, last_seen_pull_id, fetched_at, last_seen_at, stale)
        select {columns}, pull_id, last_seen_pull_id, fetched_at, fetched_at, false
        from price_list_incoming as incoming
        where not exists (
            select 1 from raw.aws_price_list as current_row
            where current_row.sku = incoming.sku
              and current_row.offer_term_code = incoming.offer_term_code
              and current_row.rate_code = incoming.rate_code
              and current_row.effective_to is null
        )
        """
    ).rowcount
    conn.execute("drop table price_list_incoming")
    return max(inserted, 0), max(closed, 0)


def land(
    conn: Conn, rows: Sequence[PriceRow], *, pull_id: int, fetched_at: datetime, run_id: str
) -> None:
    """Write-audit-publish: land a pull's rows for its audit instead of merging them.

    The rows go to ``raw.aws_price_list_landed`` as parsed (duplicates included,
    for the audit to see) and the pull becomes the pending batch ``pull_id`` of
    ``run_id``, all in the caller's transaction. :func:`publish_landed` merges them
    once Great Expectations passed them; :func:`quarantine_landed` keeps them out.
    """
    from spancost.validation import batches

    columns = ", ".join(_ROW_COLUMNS)
    with conn.cursor() as cur:
        with cur.copy(
            f"copy raw.aws_price_list_landed ({columns}, pull_id, fetched_at) from stdin"
        ) as copy:
            for row in rows:
                copy.write_row((*_copy_values(row), pull_id, fetched_at))
    batches.register_pending(conn, batches.PRICES, str(pull_id), run_id)


def publish_landed(conn: Conn, pull_id: int) -> tuple[int, int]:
    """Merge an audited pull's landed rows into ``raw.aws_price_list``; (inserted, closed).

    Runs in the audit's transaction, so the merge commits with the verdict. Rows
    repeated within the pull are merged once (the audit quarantines a pull whose
    repeats disagree). The landed rows are then deleted: they are in the history.
    """
    found = conn.execute(
        "select service_code, started_at from raw.aws_price_list_pulls where pull_id = %s",
        (pull_id,),
    ).fetchone()
    if found is None:
        raise PriceListError(f"price list pull {pull_id}: no such pull to publish")
    service_code, started_at = found
    _lock_service(conn, service_code)
    _new_incoming(conn)
    columns = ", ".join(_ROW_COLUMNS)
    conn.execute(
        f"""
        insert into price_list_incoming ({columns}, pull_id, last_seen_pull_id, fetched_at)
        select distinct on (sku, offer_term_code, rate_code)
            {columns}, pull_id, pull_id, fetched_at
        from raw.aws_price_list_landed
        where pull_id = %s
        order by sku, offer_term_code, rate_code
        """,
        (pull_id,),
    )
    inserted, closed = _merge_incoming(conn)
    conn.execute(
        """
        update raw.aws_price_list_pulls
        set status = 'succeeded', rows_inserted = %s, rows_closed = %s
        where pull_id = %s
        """,
        (inserted, closed, pull_id),
    )
    conn.execute("delete from raw.aws_price_list_landed where pull_id = %s", (pull_id,))
    log.info(
        "price list pull %d published (started %s): %d new rows, %d closed",
        pull_id,
        started_at.isoformat(),
        inserted,
        closed,
    )
    return inserted, closed


def quarantine_landed(conn: Conn, pull_id: int, reason: str) -> int:
    """An audited pull failed: its rows stay landed, the prices in use are marked stale.

    Runs in the audit's transaction. The pull does not count as a refresh, so the
    next run pulls again. Returns how many open prices were marked stale.
    """
    found = conn.execute(
        """
        update raw.aws_price_list_pulls set status = 'quarantined', error = %s
        where pull_id = %s
        returning query_name, service_code, filters
        """,
        (reason, pull_id),
    ).fetchone()
    if found is None:
        raise PriceListError(f"price list pull {pull_id}: no such pull to quarantine")
    query_name, service_code, filters = found
    query = ProductQuery(
        name=str(query_name),
        service_code=str(service_code),
        filters=tuple(
            PriceFilter(str(f["Field"]), str(f["Value"]), str(f.get("Type", "TERM_MATCH")))
            for f in filters or []
        ),
    )
    return _mark_stale(conn, query)


def _mark_stale(conn: Conn, query: ProductQuery) -> int:
    """Flag the open prices this query maintains as stale; they stay the prices in use."""
    region = query.region_code
    return max(
        conn.execute(
            """
            update raw.aws_price_list
            set stale = true
            where service_code = %s
              and effective_to is null
              and (%s::text is null or region_code = %s::text)
              and not stale
            """,
            (query.service_code, region, region),
        ).rowcount,
        0,
    )


_API_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, PriceListError)


def refresh(
    conn: Conn,
    client: Any,
    query: ProductQuery,
    *,
    now: datetime,
    page_size: int | None = None,
    batch_run_id: str | None = None,
) -> RefreshResult:
    """Pull one query to the last page and merge it; on failure keep and flag the old prices.

    With ``batch_run_id`` (write-audit-publish) the complete pull is landed
    instead, as a pending batch of that run (status ``landed``): the audit merges
    it (:func:`publish_landed`) or quarantines it.

    The pull is all or nothing: an error on any page (API or parse) writes no
    price, marks the query's open prices ``stale`` and records the failed pull
    with its error. Postgres errors propagate (the task should retry).

    Every statement runs in a ``conn.transaction()`` block, so pass an
    autocommit connection or an idle one: the pull row, the failure record and
    the merge then commit each on their own.
    """
    pull_id = _start_pull(conn, query, now)
    started = time.monotonic()
    fetched = Fetched()
    try:
        fetch(client, query, page_size=page_size, into=fetched)
    except _API_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "price list %s: pull %d failed after %d pages, prices kept as stale: %s",
            query.name,
            pull_id,
            fetched.pages,
            error,
        )
        with conn.transaction():
            marked = _mark_stale(conn, query)
            conn.execute(
                """
                update raw.aws_price_list_pulls
                set status = 'failed', finished_at = %s, pages = %s, items = %s, error = %s
                where pull_id = %s
                """,
                (_finished(now, started), fetched.pages, fetched.items, error, pull_id),
            )
        return RefreshResult(
            pull_id=pull_id,
            query_name=query.name,
            service_code=query.service_code,
            status="failed",
            pages=fetched.pages,
            items=fetched.items,
            rows_marked_stale=marked,
            error=error,
        )
    if batch_run_id is not None:
        with conn.transaction():
            land(conn, fetched.rows, pull_id=pull_id, fetched_at=now, run_id=batch_run_id)
            conn.execute(
                """
                update raw.aws_price_list_pulls
                set status = 'landed', finished_at = %s, pages = %s, items = %s, rows_seen = %s
                where pull_id = %s
                """,
                (_finished(now, started), fetched.pages, fetched.items, len(fetched.rows), pull_id),
            )
        log.info(
            "price list %s: pull %d landed, %d rows for the audit",
            query.name,
            pull_id,
            len(fetched.rows),
        )
        return RefreshResult(
            pull_id=pull_id,
            query_name=query.name,
            service_code=query.service_code,
            status="landed",
            pages=fetched.pages,
            items=fetched.items,
            rows_seen=len(fetched.rows),
        )
    with conn.transaction():
        _lock_service(conn, query.service_code)
        inserted, closed = store(conn, fetched.rows, pull_id=pull_id, fetched_at=now)
        conn.execute(
            """
            update raw.aws_price_list_pulls
            set status = 'succeeded', finished_at = %s, pages = %s, items = %s, rows_seen = %s,
                rows_inserted = %s, rows_closed = %s
            where pull_id = %s
            """,
            (
                _finished(now, started),
                fetched.pages,
                fetched.items,
                len(fetched.rows),
                inserted,
                closed,
                pull_id,
            ),
        )
    log.info(
        "price list %s: pull %d stored, %d new rows, %d closed",
        query.name,
        pull_id,
        inserted,
        closed,
    )
    return RefreshResult(
        pull_id=pull_id,
        query_name=query.name,
        service_code=query.service_code,
        status="succeeded",
        pages=fetched.pages,
        items=fetched.items,
        rows_seen=len(fetched.rows),
        rows_inserted=inserted,
        rows_closed=closed,
    )


def refresh_due(
    conn: Conn,
    now: datetime,
    min_interval: timedelta = timedelta(hours=24),
    force: bool = False,
    query_name: str | None = None,
) -> bool:
    """Whether a refresh should run: forced, or no successful pull started within ``min_interval``.

    With ``query_name`` the question is about that query; without, about any query.
    A failed or quarantined pull does not count, so the next run tries again; a
    landed one (its audit pending) does.
    """
    if force:
        return True
    with conn.transaction():
        found = conn.execute(
            """
            select max(started_at) from raw.aws_price_list_pulls
            where status in ('succeeded', 'landed')
              and (%s::text is null or query_name = %s::text)
            """,
            (query_name, query_name),
        ).fetchone()
    last = found[0] if found else None
    return last is None or bool(last <= now - min_interval)


def refresh_all(
    conn: Conn,
    client: Any,
    queries: Iterable[ProductQuery] = DEFAULT_QUERIES,
    *,
    now: datetime,
    min_interval: timedelta = timedelta(hours=24),
    force: bool = False,
    page_size: int | None = None,
    batch_run_id: str | None = None,
) -> list[RefreshResult]:
    """Refresh every query that is due; one pull (and one transaction) per query.

    With ``batch_run_id`` each complete pull is landed for its audit (see :func:`refresh`).
    """
    results: list[RefreshResult] = []
    for query in queries:
        if refresh_due(conn, now, min_interval, force, query_name=query.name):
            results.append(
                refresh(
                    conn, client, query, now=now, page_size=page_size, batch_run_id=batch_run_id
                )
            )
        else:
            log.info("price list %s: refreshed within %s, skipped", query.name, min_interval)
    return results
