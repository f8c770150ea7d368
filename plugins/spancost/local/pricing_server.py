"""A local AWS Price List endpoint on loopback (moto has no Pricing service).

It speaks the real wire protocol, AWS JSON 1.1: ``POST /`` with
``X-Amz-Target: AWSPriceListService.<Operation>`` and a JSON body. It serves
``GetProducts`` (``TERM_MATCH`` and the other filter types on product
attributes and ``ServiceCode``, ``MaxResults`` paging with an opaque
``NextToken``, each ``PriceList`` entry a JSON string), ``DescribeServices``
and ``GetAttributeValues``. Errors are AWS-style: HTTP 4xx/5xx with
``{"__type": ..., "message": ...}``. Request signatures are not checked.

boto3 reaches it with ``client("pricing", endpoint_url=url)`` or through
``AWS_ENDPOINT_URL_PRICING`` / ``AWS_ENDPOINT_URL``. Run it in the background::

    python -m spancost.local.pricing_server --port 0 --port-file .spancost/pricing/port

The prices in :func:`demo_catalogue` have the published shape; the amounts are
illustrative and not a substitute for the live API.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TARGET_PREFIX = "AWSPriceListService."
CONTENT_TYPE = "application/x-amz-json-1.1"
DEFAULT_MAX_RESULTS = 100
MAX_RESULTS = 100
ON_DEMAND_TERM_CODE = "JRTCKXETXF"  # the offer term code AWS uses for on-demand
HOURLY_RATE_SUFFIX = "6YS6EN2CT7"

Item = Mapping[str, Any]


class ApiError(Exception):
    """An error the endpoint returns to the client, in the AWS JSON error shape."""

    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Fault:
    """A planned failure: after ``skip`` good requests, ``times`` requests fail like this."""

    error_type: str
    message: str
    status: int = 400
    times: int = 1
    skip: int = 0


# --------------------------------------------------------------------------- catalogue


def _code(*parts: str, length: int = 16) -> str:
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:length]


def catalogue_item(
    service_code: str,
    attributes: Mapping[str, str],
    *,
    unit: str,
    price_usd: str | Decimal,
    description: str,
    product_family: str | None = None,
    effective_date: str = "2025-01-01T00:00:00Z",
    publication_date: str = "2025-06-01T00:00:00Z",
    sku: str | None = None,
) -> dict[str, Any]:
    """One product in the ``GetProducts`` item shape, with one on-demand price.

    The sku is derived from the service code and attributes, so the same
    product built again with another price is the same sku (a price change).
    """
    attrs = {"servicecode": service_code, **attributes}
    sku = sku or _code(service_code, json.dumps(attrs, sort_keys=True))
    offer = f"{sku}.{ON_DEMAND_TERM_CODE}"
    rate_suffix = HOURLY_RATE_SUFFIX if unit == "Hrs" else _code(sku, unit, length=10)
    rate_code = f"{offer}.{rate_suffix}"
    product: dict[str, Any] = {"attributes": attrs, "sku": sku}
    if product_family:
        product["productFamily"] = product_family
    price = Decimal(str(price_usd)).quantize(Decimal("1E-10"))
    return {
        "product": product,
        "serviceCode": service_code,
        "terms": {
            "OnDemand": {
                offer: {
                    "priceDimensions": {
                        rate_code: {
                            "unit": unit,
                            "endRange": "Inf",
                            "description": description,
                            "appliesTo": [],
                            "rateCode": rate_code,
                            "beginRange": "0",
                            "pricePerUnit": {"USD": str(price)},
                        }
                    },
                    "sku": sku,
                    "effectiveDate": effective_date,
                    "offerTermCode": ON_DEMAND_TERM_CODE,
                    "termAttributes": {},
                }
            }
        },
        "version": publication_date[:19].replace("-", "").replace(":", "").replace("T", ""),
        "publicationDate": publication_date,
    }


_LOCATIONS = {"us-east-1": "US East (N. Virginia)", "us-west-2": "US West (Oregon)"}
_USAGE_PREFIX = {"us-east-1": "USE1", "us-west-2": "USW2"}


def sagemaker_instance(
    region: str, instance: str, component: str, price: str, **spec: str
) -> dict[str, Any]:
    prefix = _USAGE_PREFIX[region]
    usage = (
        f"{prefix}-{component}:{instance}"
        if component != "Hosting"
        else f"{prefix}-Host:{instance}"
    )
    return catalogue_item(
        "AmazonSageMaker",
        {
            "instanceName": instance,
            "component": component,
            "regionCode": region,
            "location": _LOCATIONS[region],
            "locationType": "AWS Region",
            "usagetype": usage,
            "operation": "RunInstance",
            "servicename": "Amazon SageMaker",
            "platoinstancetype": component,
            **spec,
        },
        unit="Hrs",
        price_usd=price,
        description=f"${Decimal(price).normalize()} per {component} {instance} hour "
        f"in {_LOCATIONS[region]}",
        product_family="ML Instance",
    )


def ec2_instance(region: str, instance: str, price: str, **spec: str) -> dict[str, Any]:
    prefix = _USAGE_PREFIX[region]
    usage = f"BoxUsage:{instance}" if region == "us-east-1" else f"{prefix}-BoxUsage:{instance}"
    return catalogue_item(
        "AmazonEC2",
        {
            "instanceType": instance,
            "instanceFamily": "GPU instance",
            "regionCode": region,
            "location": _LOCATIONS[region],
            "locationType": "AWS Region",
            "usagetype": usage,
            "operation": "RunInstances",
            "operatingSystem": "Linux",
            "tenancy": "Shared",
            "capacitystatus": "Used",
            "preInstalledSw": "NA",
            "licenseModel": "No License required",
            "marketoption": "OnDemand",
            "servicename": "Amazon Elastic Compute Cloud",
            **spec,
        },
        unit="Hrs",
        price_usd=price,
        description=f"${Decimal(price).normalize()} per On Demand Linux {instance} Instance Hour",
        product_family="Compute Instance",
    )


def bedrock_tokens(
    region: str, model: str, model_id: str, direction: str, price_per_1k: str
) -> dict[str, Any]:
    """An ``AmazonBedrock`` on-demand token price (unit ``1K tokens``)."""
    prefix = _USAGE_PREFIX[region]
    return catalogue_item(
        "AmazonBedrock",
        {
            "model": model,
            "modelId": model_id,
            "inferenceType": f"{direction} tokens",
            "feature": "On-demand Inference",
            "regionCode": region,
            "location": _LOCATIONS[region],
            "locationType": "AWS Region",
            "usagetype": f"{prefix}-{model.replace(' ', '')}-{direction.lower()}-tokens",
            "operation": "Usage",
            "servicename": "Amazon Bedrock",
        },
        unit="1K tokens",
        price_usd=price_per_1k,
        description=f"Amazon Bedrock {model} {direction.lower()} tokens per 1K",
    )


_EDITION_USAGE = {
    "Input": ("InputTokenCount", "Million Input Tokens"),
    "Output": ("OutputTokenCount", "Million Output Tokens"),
    "CacheRead": ("CacheReadInputTokenCount", "Million Cache Read Input Tokens"),
    "CacheWrite": ("CacheWriteInputTokenCount", "Million Cache Write Input Tokens"),
}


def bedrock_edition_tokens(
    region: str, model: str, kind: str, price_per_million: str, *, global_: bool = False
) -> dict[str, Any]:
    """An ``AmazonBedrockFoundationModels`` (Marketplace) price: unit ``Units``, per million."""
    prefix = _USAGE_PREFIX[region]
    counter, words = _EDITION_USAGE[kind]
    suffix = "_Global-Units" if global_ else "-Units"
    return catalogue_item(
        "AmazonBedrockFoundationModels",
        {
            "servicename": f"{model} (Amazon Bedrock Edition)",
            "usagetype": f"{prefix}-MP:{prefix}_{counter}{suffix}",
            "operation": "Usage",
            "regionCode": region,
            "location": _LOCATIONS[region],
            "locationType": "AWS Region",
        },
        unit="Units",
        price_usd=price_per_million,
        description=(
            f"AWS Marketplace software usage|{region}|{words}{' Global' if global_ else ''}"
        ),
    )


def demo_catalogue() -> list[dict[str, Any]]:
    """Realistically shaped products for the demo and the tests (amounts illustrative)."""
    items: list[dict[str, Any]] = []
    for region in ("us-east-1", "us-west-2"):
        items += [
            sagemaker_instance(region, "ml.g5.xlarge", "Hosting", "1.408", vCpu="4", gpu="1"),
            sagemaker_instance(region, "ml.g5.2xlarge", "Hosting", "1.515", vCpu="8", gpu="1"),
            sagemaker_instance(region, "ml.m5.xlarge", "Hosting", "0.23", vCpu="4", gpu="0"),
        ]
    items += [
        sagemaker_instance("us-east-1", "ml.g5.xlarge", "Training", "1.408", vCpu="4", gpu="1"),
        ec2_instance("us-east-1", "p4d.24xlarge", "32.7726", vcpu="96", gpu="8"),
        ec2_instance("us-east-1", "g5.xlarge", "1.006", vcpu="4", gpu="1"),
        ec2_instance("us-east-1", "g6.xlarge", "0.8048", vcpu="4", gpu="1"),
        bedrock_tokens("us-east-1", "Nova Pro", "amazon.nova-pro-v1:0", "Input", "0.0008"),
        bedrock_tokens("us-east-1", "Nova Pro", "amazon.nova-pro-v1:0", "Output", "0.0032"),
        bedrock_tokens("us-east-1", "Nova Micro", "amazon.nova-micro-v1:0", "Input", "0.000035"),
        bedrock_tokens("us-east-1", "Nova Micro", "amazon.nova-micro-v1:0", "Output", "0.00014"),
        bedrock_tokens(
            "us-east-1", "Llama 3.3 70B", "meta.llama3-3-70b-instruct-v1:0", "Input", "0.00072"
        ),
        bedrock_tokens(
            "us-east-1", "Llama 3.3 70B", "meta.llama3-3-70b-instruct-v1:0", "Output", "0.00072"
        ),
    ]
    editions = {
        "Claude Sonnet 4.6": {
            "Input": "3",
            "Output": "15",
            "CacheRead": "0.3",
            "CacheWrite": "3.75",
        },
        "Claude Haiku 4.5": {"Input": "1", "Output": "5", "CacheRead": "0.1", "CacheWrite": "1.25"},
    }
    for model, prices in editions.items():
        for kind, price in prices.items():
            # Regional (in-geography) inference is priced 10% above global inference.
            regional = str(Decimal(price) * Decimal("1.1"))
            items.append(bedrock_edition_tokens("us-east-1", model, kind, regional))
            items.append(bedrock_edition_tokens("us-east-1", model, kind, price, global_=True))
    return items


# --------------------------------------------------------------------------- the API


def _attribute(item: Item, field: str) -> str | None:
    if field.lower() == "servicecode":
        return str(item.get("serviceCode", ""))
    attributes: Mapping[str, Any] = item.get("product", {}).get("attributes", {})
    if field in attributes:
        return str(attributes[field])
    if field == "productFamily":
        family = item.get("product", {}).get("productFamily")
        return str(family) if family is not None else None
    return None


def _matches(item: Item, filters: Sequence[Mapping[str, Any]]) -> bool:
    for index, spec in enumerate(filters):
        kind, field, value = spec.get("Type"), spec.get("Field"), spec.get("Value")
        if not isinstance(field, str) or not isinstance(value, str):
            raise ApiError(
                "InvalidParameterException", f"Filters[{index}]: Field and Value are required"
            )
        actual = _attribute(item, field)
        if kind in ("TERM_MATCH", "EQUALS"):
            ok = actual is not None and actual.lower() == value.lower()
        elif kind == "CONTAINS":
            ok = actual is not None and value.lower() in actual.lower()
        elif kind in ("ANY_OF", "NONE_OF"):
            options = {option.strip().lower() for option in value.split(",")}
            hit = actual is not None and actual.lower() in options
            ok = hit if kind == "ANY_OF" else not hit
        else:
            raise ApiError(
                "InvalidParameterException",
                f"Filters[{index}].Type: unsupported filter type {kind!r}",
            )
        if not ok:
            return False
    return True


def _page_size(body: Mapping[str, Any]) -> int:
    size = body.get("MaxResults", DEFAULT_MAX_RESULTS)
    if not isinstance(size, int) or not 1 <= size <= MAX_RESULTS:
        raise ApiError(
            "InvalidParameterException",
            f"MaxResults must be between 1 and {MAX_RESULTS}, got {size!r}",
        )
    return size


def _fingerprint(operation: str, body: Mapping[str, Any]) -> str:
    scope = {k: v for k, v in body.items() if k not in ("NextToken", "MaxResults")}
    return _code(operation, json.dumps(scope, sort_keys=True), length=12)


def _encode_token(fingerprint: str, offset: int) -> str:
    return base64.b64encode(f"{fingerprint}:{offset}".encode()).decode()


def _decode_token(token: object, fingerprint: str) -> int:
    try:
        text = base64.b64decode(str(token), validate=True).decode()
        seen, offset = text.split(":", 1)
        if seen == fingerprint:
            return int(offset)
    except ValueError:
        pass
    raise ApiError("InvalidNextTokenException", "The NextToken is not valid for this request.")


def _paged(
    operation: str, body: Mapping[str, Any], results: list[Any]
) -> tuple[list[Any], str | None]:
    size = _page_size(body)
    fingerprint = _fingerprint(operation, body)
    offset = _decode_token(body["NextToken"], fingerprint) if body.get("NextToken") else 0
    page = results[offset : offset + size]
    following = offset + size
    return page, (_encode_token(fingerprint, following) if following < len(results) else None)


class Catalogue:
    """The products served, replaceable while the server runs (a price change)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._lock = threading.Lock()
        self._items: list[Item] = list(items)

    def replace(self, items: Iterable[Item]) -> None:
        with self._lock:
            self._items = list(items)

    def items(self) -> list[Item]:
        with self._lock:
            return list(self._items)


def _require_service(catalogue: list[Item], body: Mapping[str, Any]) -> str:
    code = body.get("ServiceCode")
    if not isinstance(code, str) or not code:
        raise ApiError("InvalidParameterException", "ServiceCode is required")
    if not any(item.get("serviceCode") == code for item in catalogue):
        raise ApiError("NotFoundException", f"Service code {code!r} was not found")
    return code


def get_products(catalogue: list[Item], body: Mapping[str, Any]) -> dict[str, Any]:
    code = _require_service(catalogue, body)
    version = body.get("FormatVersion", "aws_v1")
    if version != "aws_v1":
        raise ApiError("InvalidParameterException", f"FormatVersion {version!r} is not supported")
    filters = body.get("Filters") or []
    if not isinstance(filters, list):
        raise ApiError("InvalidParameterException", "Filters must be a list")
    matching = [
        item for item in catalogue if item.get("serviceCode") == code and _matches(item, filters)
    ]
    page, token = _paged("GetProducts", body, matching)
    response: dict[str, Any] = {
        "FormatVersion": "aws_v1",
        "PriceList": [json.dumps(item, separators=(",", ":")) for item in page],
    }
    if token:
        response["NextToken"] = token
    return response


def describe_services(catalogue: list[Item], body: Mapping[str, Any]) -> dict[str, Any]:
    names: dict[str, set[str]] = {}
    for item in catalogue:
        attributes = item.get("product", {}).get("attributes", {})
        names.setdefault(str(item.get("serviceCode")), set()).update(attributes)
    code = body.get("ServiceCode")
    if code:
        if code not in names:
            raise ApiError("NotFoundException", f"Service code {code!r} was not found")
        names = {code: names[code]}
    services = [
        {"ServiceCode": service, "AttributeNames": sorted(attrs)}
        for service, attrs in sorted(names.items())
    ]
    page, token = _paged("DescribeServices", body, services)
    response: dict[str, Any] = {"FormatVersion": "aws_v1", "Services": page}
    if token:
        response["NextToken"] = token
    return response


def get_attribute_values(catalogue: list[Item], body: Mapping[str, Any]) -> dict[str, Any]:
    code = _require_service(catalogue, body)
    name = body.get("AttributeName")
    if not isinstance(name, str) or not name:
        raise ApiError("InvalidParameterException", "AttributeName is required")
    values = sorted(
        {
            value
            for item in catalogue
            if item.get("serviceCode") == code and (value := _attribute(item, name)) is not None
        }
    )
    page, token = _paged("GetAttributeValues", body, [{"Value": value} for value in values])
    response: dict[str, Any] = {"AttributeValues": page}
    if token:
        response["NextToken"] = token
    return response


OPERATIONS = {
    "GetProducts": get_products,
    "DescribeServices": describe_services,
    "GetAttributeValues": get_attribute_values,
}


class PricingServer(ThreadingHTTPServer):
    """The endpoint: a catalogue, a request count per operation, and planned faults."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], catalogue: Iterable[Item]) -> None:
        super().__init__(address, _Handler)
        self.catalogue = Catalogue(catalogue)
        self.requests: dict[str, int] = {}
        self._faults: deque[Fault] = deque()
        self._fault_lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(
        self, error_type: str, message: str, *, status: int = 400, times: int = 1, skip: int = 0
    ) -> None:
        """Answer ``times`` requests with this error, after ``skip`` more good ones."""
        with self._fault_lock:
            self._faults.append(Fault(error_type, message, status, times, skip))

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._faults.clear()

    def _fault(self) -> Fault | None:
        with self._fault_lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.skip > 0:
                self._faults[0] = Fault(
                    fault.error_type, fault.message, fault.status, fault.times, fault.skip - 1
                )
                return None
            if fault.times <= 1:
                self._faults.popleft()
            else:
                self._faults[0] = Fault(
                    fault.error_type, fault.message, fault.status, fault.times - 1, 0
                )
            return fault

    def handle_call(self, target: str | None, content_type: str | None, raw: bytes) -> Any:
        if not target or not target.startswith(TARGET_PREFIX):
            raise ApiError("UnknownOperationException", f"Unknown target {target!r}")
        operation = target.removeprefix(TARGET_PREFIX)
        handler = OPERATIONS.get(operation)
        if handler is None:
            raise ApiError("UnknownOperationException", f"Operation {operation!r} is not supported")
        if content_type and not content_type.startswith(
            ("application/x-amz-json", "application/json")
        ):
            raise ApiError("SerializationException", f"Unsupported Content-Type {content_type!r}")
        with self._fault_lock:
            self.requests[operation] = self.requests.get(operation, 0) + 1
        fault = self._fault()
        if fault is not None:
            raise ApiError(fault.error_type, fault.message, fault.status)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise ApiError("SerializationException", f"Request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError("SerializationException", "Request body must be a JSON object")
        return handler(self.catalogue.items(), body)


class _Handler(BaseHTTPRequestHandler):
    server: PricingServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            if self.path.split("?", 1)[0] != "/":
                raise ApiError("UnknownOperationException", f"No such path {self.path!r}", 404)
            status, payload = (
                200,
                self.server.handle_call(
                    self.headers.get("X-Amz-Target"), self.headers.get("Content-Type"), raw
                ),
            )
        except ApiError as exc:
            status, payload = exc.status, {"__type": exc.error_type, "message": exc.message}
        except Exception:  # an unexpected bug must still answer like AWS does
            log.exception("pricing endpoint: internal error")
            status, payload = 500, {"__type": "InternalErrorException", "message": "internal error"}
        self._send(status, payload)

    def do_GET(self) -> None:
        self._send(200 if self.path == "/ping" else 404, {"status": "ok"})

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("pricing endpoint: " + format, *args)


def start_pricing_server(
    catalogue: Iterable[Item] | None = None, host: str = "127.0.0.1", port: int = 0
) -> tuple[PricingServer, str]:
    """Serve the catalogue (the demo one by default) on a background thread.

    Returns the server (``shutdown()`` then ``server_close()`` to stop it) and its URL.
    """
    server = PricingServer((host, port), demo_catalogue() if catalogue is None else catalogue)
    thread = threading.Thread(target=server.serve_forever, name="pricing-endpoint", daemon=True)
    thread.start()
    log.info("local Price List endpoint at %s", server.endpoint_url)
    return server, server.endpoint_url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local AWS Price List endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the chosen port here")
    parser.add_argument(
        "--catalogue", type=Path, help="a JSON list of GetProducts items (default: the demo one)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    items = json.loads(args.catalogue.read_text()) if args.catalogue else demo_catalogue()
    server = PricingServer((args.host, args.port), items)
    if args.port_file:
        args.port_file.parent.mkdir(parents=True, exist_ok=True)
        args.port_file.write_text(f"{server.server_address[1]}\n")
    log.info("local Price List endpoint at %s", server.endpoint_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
