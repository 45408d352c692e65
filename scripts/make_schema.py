"""Generate schema/schema.pbtxt from fraud.features (run by hand when the data contract changes, then
review the diff: the schema is curated and kept in git).  .venv/bin/python scripts/make_schema.py"""
from pathlib import Path

from tensorflow_metadata.proto.v0 import schema_pb2
from google.protobuf import text_format

from fraud import features as F

PERU_CITIES = [c for c in F.CITY_COORDS if c not in ("Santiago", "Buenos Aires", "Bogota", "Sao Paulo",
                                                     "New York", "Madrid")]
DOMAINS = {  # feature -> (values, min_domain_mass): mass < 1 tolerates rare new values
    F.CURRENCY: (["PEN", "USD", F.MISSING], 1.0),
    F.PAYMENT_METHOD: (["credit_card", "debit_card", "mobile_wallet", "amex", F.MISSING], 1.0),
    F.TRANSACTION_TYPE: (["dine_in", "reservation_deposit", "delivery", "tip_adjustment", F.MISSING], 1.0),
    F.CITY: (PERU_CITIES + [F.MISSING], 0.99),
    F.HOME_CITY: (list(F.CITY_COORDS) + [F.MISSING], 0.99),
    F.USER_GENDER: (["F", "M", "X", F.MISSING], 1.0),
    F.DEVICE_TYPE: (["pos_terminal", "ios", "android", "web", F.MISSING], 0.99),
    F.TIME_OF_DAY: ([name for name, _, _ in F.TIME_OF_DAY_BUCKETS], 1.0),
    F.FRAUD_SCENARIO: (["none", "stolen_card", "card_testing", "account_takeover", "compromised_restaurant",
                        F.MISSING], 1.0),
}
FLOAT_RANGES = {F.AMOUNT: (0.0, 100_000.0), F.USER_AGE: (16.0, 110.0)}
INT_RANGES = {F.EVENT_TIME: (1_262_304_000, 4_102_444_800), F.LABEL: (0, 1)}  # 2010..2100
# Drift limits (eval vs train): L-infinity distance of value shares (categorical), Jensen-Shannon divergence
# (numeric). Every model input but the event time gets one; F.DRIFT_BLOCKING_FEATURES stop the pipeline, the
# others warn (fraud.validation).
CATEGORICAL_DRIFT = {F.CURRENCY: 0.2, F.PAYMENT_METHOD: 0.2, F.TRANSACTION_TYPE: 0.2, F.CITY: 0.2,
                     F.DEVICE_TYPE: 0.2}
NUMERIC_DRIFT = {F.AMOUNT: 0.3}
WATCH_CATEGORICAL_DRIFT = 0.2
WATCH_NUMERIC_DRIFT = 0.3
assert set(CATEGORICAL_DRIFT) | set(NUMERIC_DRIFT) == set(F.DRIFT_BLOCKING_FEATURES)


def build() -> schema_pb2.Schema:
    schema = schema_pb2.Schema()
    schema.default_environment.extend(["TRAINING", "SERVING"])
    names = list(F.NUMERIC_FEATURES) + list(F.BEHAVIOUR_FEATURES) + [F.EVENT_TIME, F.LABEL] + list(F.CATEGORICAL_FEATURES) + [
        c for c in F.PASSTHROUGH_STRING_COLUMNS if c not in F.CATEGORICAL_FEATURES]
    for name in names:
        feature = schema.feature.add(name=name)
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        feature.shape.dim.add(size=1)
        if name in F.BEHAVIOUR_FEATURES:
            feature.type = schema_pb2.FLOAT
            feature.float_domain.min = 0.0  # counts, sums, rates, speeds, scores: never negative
        elif name in FLOAT_RANGES:
            feature.type = schema_pb2.FLOAT
            feature.float_domain.min, feature.float_domain.max = FLOAT_RANGES[name]
        elif name in INT_RANGES:
            feature.type = schema_pb2.INT
            feature.int_domain.min, feature.int_domain.max = INT_RANGES[name]
            if name == F.LABEL:
                feature.int_domain.is_categorical = True
                feature.not_in_environment.append("SERVING")
        else:
            feature.type = schema_pb2.BYTES
            if name in DOMAINS:
                values, mass = DOMAINS[name]
                feature.domain = name
                domain = schema.string_domain.add(name=name)
                domain.value.extend(values)
                if mass < 1.0:
                    feature.distribution_constraints.min_domain_mass = mass
        if name in CATEGORICAL_DRIFT:
            feature.drift_comparator.infinity_norm.threshold = CATEGORICAL_DRIFT[name]
        elif name in NUMERIC_DRIFT:
            feature.drift_comparator.jensen_shannon_divergence.threshold = NUMERIC_DRIFT[name]
        elif name in F.MODEL_INPUTS and name not in F.DRIFT_UNMEASURED:
            if feature.type == schema_pb2.BYTES:
                feature.drift_comparator.infinity_norm.threshold = WATCH_CATEGORICAL_DRIFT
            else:
                feature.drift_comparator.jensen_shannon_divergence.threshold = WATCH_NUMERIC_DRIFT
    return schema


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "schema" / "schema.pbtxt"
    path.write_text("# Curated schema of the ingested examples (see scripts/make_schema.py and README).\n"
                    + text_format.MessageToString(build()))
    print(f"wrote {path}")
