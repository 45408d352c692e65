"""REST client for the fraud model, for applications: works against TF Serving and against `fraudctl serve`.

    python -m serving.client_rest --url http://localhost:8501            # score one example transaction
    python -m serving.client_rest --url http://localhost:8501 --label stable --status
    python -m serving.client_rest --print-request > request.json   # a body for curl, every model input

Every call has a timeout and checks the status; errors carry TF Serving's `{"error": ...}` message.
The model name and signature names come from fraud.features.
"""
from __future__ import annotations

import argparse
import json
import sys

import requests

from fraud.errors import FraudError

from fraud import features as F

DEFAULT_TIMEOUT_S = 2.0  # a card authorisation cannot wait longer; callers fall back to rules on timeout


class RestClientError(FraudError):
    """The server answered a REST call with an error status (`status`: the HTTP code, `message`: its text)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class RestClient:
    def __init__(self, url: str, *, model_name: str = F.MODEL_NAME, version: int | None = None,
                 label: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, session: requests.Session | None = None):
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        self.base = f"{url.rstrip('/')}/v1/models/{model_name}"
        if version is not None:
            self.base += f"/versions/{version}"
        elif label is not None:
            self.base += f"/labels/{label}"
        self.timeout = timeout
        self.session = session or requests.Session()  # keep-alive: one TCP connection for many calls

    def _call(self, method: str, suffix: str, body: dict | None = None) -> dict:
        # json.dumps writes NaN / Infinity, which TF Serving accepts (requests' json= would refuse them).
        data = None if body is None else json.dumps(body)
        response = self.session.request(method, self.base + suffix, data=data, timeout=self.timeout,
                                        headers={"Content-Type": "application/json"})
        try:
            document = response.json()
        except ValueError:
            document = {"error": response.text[:500]}
        if response.status_code != 200:
            raise RestClientError(response.status_code, document.get("error", response.text[:500]))
        return document

    def status(self) -> dict:
        return self._call("GET", "")

    def metadata(self) -> dict:
        return self._call("GET", "/metadata")

    def predict(self, transactions: list[dict]) -> list[float]:
        """Fraud scores in [0, 1] (a ranking, not calibrated probabilities), one per transaction, via the raw-feature
        signature (row format).
        Each transaction holds every model input (fraud.features.MODEL_INPUTS), floats as floats."""
        document = self._call("POST", ":predict", {"signature_name": F.SERVING_SIGNATURE, "instances": transactions})
        return document["predictions"]

    def predict_columns(self, columns: dict) -> list[float]:
        """Columnar format: {feature: [values...]} -> scores."""
        return self._call("POST", ":predict", {"signature_name": F.SERVING_SIGNATURE, "inputs": columns})["outputs"]

    def classify(self, transactions: list[dict]) -> list[dict]:
        """TF Serving's classify API over tf.Examples: [{class label: score}] per transaction."""
        document = self._call("POST", ":classify", {"signature_name": F.CLASSIFY_SIGNATURE, "examples": transactions})
        return [dict((label, score) for label, score in result) for result in document["results"]]


# The three request bodies TF Serving's REST API takes, for one transaction.
REQUEST_FORMATS = {
    "row": lambda t: {"signature_name": F.SERVING_SIGNATURE, "instances": [t]},
    "columnar": lambda t: {"signature_name": F.SERVING_SIGNATURE, "inputs": {k: [v] for k, v in t.items()}},
    "classify": lambda t: {"signature_name": F.CLASSIFY_SIGNATURE, "examples": [t]},
}


def main(argv=None) -> int:
    from serving.example import example_transaction, typed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:8501")
    parser.add_argument("--version", type=int)
    parser.add_argument("--label")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--status", action="store_true", help="print the model status first")
    parser.add_argument("--print-request", nargs="?", const="row", choices=sorted(REQUEST_FORMATS),
                        help="print a request body with one synthetic transaction and exit (for curl -d @file): "
                             "row (:predict, the default), columnar (:predict) or classify (:classify)")
    args = parser.parse_args(argv)
    if args.print_request:
        print(json.dumps(REQUEST_FORMATS[args.print_request](typed(example_transaction())), indent=2))
        return 0
    client = RestClient(args.url, version=args.version, label=args.label, timeout=args.timeout)
    try:
        if args.status:
            print(json.dumps(client.status(), indent=2))
        transaction = typed(example_transaction())
        print(json.dumps({"transaction": transaction, F.SCORE_OUTPUT: client.predict([transaction])[0],
                          "classify": client.classify([transaction])[0]}, indent=2))
    except (RestClientError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
