"""TLS on the gRPC port, as TF Serving's --ssl_config_file: a client must trust the server's CA, and with
client_verify the server accepts only clients whose certificate its CA signed. Certificates are made here."""
from __future__ import annotations

import datetime as dt
import ipaddress

import grpc
import pytest

from fraud import features as F
from serving.client_grpc import GrpcClient
from serving.config import SSLConfig
from serving.example import example_transaction, typed
from serving.process import start_server
from serving.servable import read_signature_defs
from tests.helpers import run_fraudctl
from tests.serving.support import newest_version

pytestmark = pytest.mark.slow
TIMEOUT = 20


def _pem_pair(name: str, issuer=None, *, ca: bool = False):
    """(key PEM, certificate PEM, (key, certificate)) for `name`, signed by `issuer` (or self-signed)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, signer_cert = issuer if issuer else (key, None)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(signer_cert.subject if signer_cert else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), (key, cert)


@pytest.fixture(scope="module")
def pki():
    ca_key, ca_pem, ca = _pem_pair("fraud test CA", ca=True)
    server_key, server_pem, _ = _pem_pair("localhost", ca)
    client_key, client_pem, _ = _pem_pair("decision-service", ca)
    _, other_ca_pem, _ = _pem_pair("someone else's CA", ca=True)
    return dict(ca=ca_pem, server_key=server_key, server_cert=server_pem, client_key=client_key,
                client_cert=client_pem, other_ca=other_ca_pem)


def _ssl_config(path, pki, *, client_verify: bool):
    from google.protobuf import text_format

    config = SSLConfig(server_key=pki["server_key"].decode(), server_cert=pki["server_cert"].decode(),
                       custom_ca=pki["ca"].decode() if client_verify else "", client_verify=client_verify)
    path.write_text(text_format.MessageToString(config))
    return path


def _predicts(target: str, row: dict, **tls) -> bool:
    client = GrpcClient(target, timeout=TIMEOUT, **tls)
    try:
        scores, _ = client.predict([row])
        return len(scores) == 1
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc  # the handshake failed: no answer at all
        return False
    finally:
        client.close()


def _decision_service_inputs(target: str, ca: bytes) -> tuple[str, ...]:
    """The decision service's own model client (what `fraudctl decide serve --serving-ca` uses) over TLS."""
    import asyncio

    from decision.service import ModelClient

    async def main():
        client = ModelClient(f"grpc://{target}", F.MODEL_NAME, TIMEOUT, ssl_ca=ca)
        try:
            return await client.inputs()
        finally:
            await client.close()
    return asyncio.run(main())


def test_grpc_over_tls_and_mutual_tls(small_run, tmp_path, pki):
    source = newest_version(small_run.model_base)
    row = typed(example_transaction(sorted(read_signature_defs(source)[F.SERVING_SIGNATURE].inputs)))

    server = start_server(small_run.model_base, tmp_path / "tls.log",
                          extra_args=["--ssl-config-file", _ssl_config(tmp_path / "tls.config", pki,
                                                                       client_verify=False)])
    try:
        assert "(TLS)" in server.log()
        assert _predicts(server.grpc_target, row, ssl_ca=pki["ca"])
        assert not _predicts(server.grpc_target, row)  # plain text: refused
        assert not _predicts(server.grpc_target, row, ssl_ca=pki["other_ca"])  # a server it cannot trust
        assert set(_decision_service_inputs(server.grpc_target, pki["ca"])) == set(row)  # its client too
    finally:
        server.stop()

    server = start_server(small_run.model_base, tmp_path / "mtls.log",
                          extra_args=["--ssl-config-file", _ssl_config(tmp_path / "mtls.config", pki,
                                                                       client_verify=True)])
    try:
        assert not _predicts(server.grpc_target, row, ssl_ca=pki["ca"])  # no client certificate
        assert _predicts(server.grpc_target, row, ssl_ca=pki["ca"], ssl_cert=pki["client_cert"],
                         ssl_key=pki["client_key"])
    finally:
        server.stop()


def test_an_incomplete_ssl_config_stops_the_server(small_run, tmp_path, pki):
    config = tmp_path / "bad.config"
    config.write_text('client_verify: true\nserver_key: "x"\nserver_cert: "y"\n')
    proc = run_fraudctl("serve", "--model-base", small_run.model_base, "--rest-port", "0", "--grpc-port", "0",
                        "--ssl-config-file", config, timeout=180)
    assert proc.returncode == 2 and "client_verify needs custom_ca" in proc.stderr, proc.stderr[-2000:]
