"""gRPC client for the fraud model with the official `tensorflow-serving-api` stubs; works against TF Serving
and against `fraudctl serve`.

    python -m serving.client_grpc --target localhost:8500
    python -m serving.client_grpc --target localhost:8500 --label canary

Every call has a deadline (`timeout`); a failed call raises grpc.RpcError with TF Serving's status code and
message. The model name, signature names, input keys and the score output come from fraud.features.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import sys

import grpc
import numpy as np

from fraud import features as F

DEFAULT_TIMEOUT_S = 2.0
SIGNATURE_DEF_FIELD = "signature_def"


_NUMPY = {"float": np.float32, "int": np.int64}


def input_arrays(transactions: list[dict]) -> dict:
    """Rows -> one typed column per input (tf.float32 / tf.int64 / tf.string by fraud.features.input_kind),
    as serving_default takes them."""
    columns = {}
    for key in transactions[0]:
        values = [t[key] for t in transactions]
        kind = F.input_kind(key)
        if kind == "string":
            columns[key] = np.array([str(v).encode("utf-8") for v in values], dtype=object)
        else:
            columns[key] = np.array(values, dtype=_NUMPY[kind])
    return columns


def to_example(transaction: dict):
    import tensorflow as tf

    feature = {}
    for key, value in transaction.items():
        kind = F.input_kind(key)
        if kind == "float":
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        elif kind == "int":
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(value).encode("utf-8")]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


class GrpcClient:
    def __init__(self, target: str, *, model_name: str = F.MODEL_NAME, version: int | None = None,
                 label: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, channel=None,
                 ssl_ca: bytes | None = None, ssl_cert: bytes | None = None, ssl_key: bytes | None = None):
        """`ssl_ca` (PEM): connect with TLS, trusting that CA (a server started with --ssl-config-file);
        `ssl_cert`/`ssl_key`: this client's certificate, for a server that verifies clients."""
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024),
                   ("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if channel is None and ssl_ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=ssl_ca, private_key=ssl_key,
                                                       certificate_chain=ssl_cert)
            channel = grpc.secure_channel(target, credentials, options=options)
        self.channel = channel or grpc.insecure_channel(target, options=options)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.model_name, self.version, self.label, self.timeout = model_name, version, label, timeout

    def close(self) -> None:
        self.channel.close()

    def _spec(self, spec, signature_name: str | None = None) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        elif self.label is not None:
            spec.version_label = self.label
        if signature_name is not None:
            spec.signature_name = signature_name

    def status(self):
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        return self.models.GetModelStatus(request, timeout=self.timeout)

    def metadata(self):
        """(GetModelMetadataResponse, SignatureDefMap)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF_FIELD])
        self._spec(request.model_spec)
        response = self.prediction.GetModelMetadata(request, timeout=self.timeout)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signatures)
        return response, signatures

    def predict_request(self, transactions: list[dict]):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, F.SERVING_SIGNATURE)
        for key, values in input_arrays(transactions).items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(values))
        return request

    def predict(self, transactions: list[dict]) -> tuple[np.ndarray, int]:
        """(fraud scores, version that answered)."""
        import tensorflow as tf

        response = self.prediction.Predict(self.predict_request(transactions), timeout=self.timeout)
        return tf.make_ndarray(response.outputs[F.SCORE_OUTPUT]), response.model_spec.version.value

    def classify(self, transactions: list[dict]) -> list[dict]:
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, F.CLASSIFY_SIGNATURE)
        request.input.example_list.examples.extend(to_example(t) for t in transactions)
        response = self.prediction.Classify(request, timeout=self.timeout)
        return [{c.label: c.score for c in item.classes} for item in response.result.classifications]


def main(argv=None) -> int:
    from serving.example import example_transaction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:8500")
    parser.add_argument("--version", type=int)
    parser.add_argument("--label")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--ssl-ca", type=Path, help="PEM file of the CA that signed the server's certificate (TLS)")
    parser.add_argument("--ssl-cert", type=Path, help="this client's PEM certificate (server with client_verify)")
    parser.add_argument("--ssl-key", type=Path, help="this client's PEM private key")
    args = parser.parse_args(argv)

    def read(path):
        return path.read_bytes() if path else None

    client = GrpcClient(args.target, version=args.version, label=args.label, timeout=args.timeout,
                        ssl_ca=read(args.ssl_ca), ssl_cert=read(args.ssl_cert), ssl_key=read(args.ssl_key))
    try:
        from tensorflow_serving.apis import get_model_status_pb2

        for status in client.status().model_version_status:
            print(f"version {status.version}: {get_model_status_pb2.ModelVersionStatus.State.Name(status.state)}")
        transaction = example_transaction()
        scores, version = client.predict([transaction])
        print(f"{F.SCORE_OUTPUT} = {scores[0]:.6f} (version {version})")
        print(f"classify: {client.classify([transaction])[0]}")
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
