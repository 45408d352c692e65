"""The single source of truth for names: raw columns, features, label, model name, signatures, metrics,
artifact properties, split folders and file names.

Every other module (ingestion, generator, transform, trainer, evaluator config, scorer, report, serving)
imports from here. Renaming a column here renames it everywhere. This module imports nothing of the
project and no heavy library: the model server imports it too.
"""
from __future__ import annotations

import math
import os

# --------------------------------------------------------------------------------------------
# Model identity and serving layout
# --------------------------------------------------------------------------------------------
MODEL_NAME = "fraud_detector"  # TF Serving model name: <serving_dir>/<MODEL_NAME>/<version>/
PIPELINE_NAME = "fraud_detection"

SERVING_SIGNATURE = "serving_default"  # raw feature tensors in, fraud score out (REST/JSON clients)
EXAMPLES_SIGNATURE = "serving_examples"  # serialized tf.Example in, fraud score out (TFMA)
CLASSIFY_SIGNATURE = "classify"  # serialized tf.Example in, TF Serving classify outputs
EXAMPLES_INPUT = "examples"
CLASSIFY_INPUT = "inputs"  # TF Serving's classify API requires this input key
SCORE_OUTPUT = "fraud_score"  # probability that the transaction is fraudulent

# --------------------------------------------------------------------------------------------
# The raw data contract (transactions CSV, see README "Data contract")
# --------------------------------------------------------------------------------------------
TRANSACTION_ID = "transaction_id"
TIMESTAMP = "timestamp"  # raw, any of the accepted formats; ingestion turns it into EVENT_TIME
AMOUNT = "amount"
USER_ID = "user_id"
LABEL = "is_fraudulent"
UNKNOWN_LABEL = -1  # a label not known (yet): scoring input with blanks, live traffic

REQUIRED_COLUMNS = (TRANSACTION_ID, TIMESTAMP, AMOUNT, USER_ID)
TRAINING_REQUIRED_COLUMNS = REQUIRED_COLUMNS + (LABEL,)

CURRENCY = "currency"
PAYMENT_METHOD = "payment_method"
TRANSACTION_TYPE = "transaction_type"
RESTAURANT_ID = "restaurant_id"
CITY = "city"  # the restaurant's city
HOME_CITY = "home_city"  # the card holder's home city
USER_AGE = "user_age"
USER_GENDER = "user_gender"
DEVICE_ID = "device_id"
IP_ADDRESS = "ip_address"
DEVICE_TYPE = "device_type"
OS_VERSION = "os_version"
FRAUD_SCENARIO = "fraud_scenario"  # explanation of the label; NEVER a model feature

# Optional columns: absent or empty values are imputed (documented in README).
OPTIONAL_STRING_COLUMNS = (
    CURRENCY, PAYMENT_METHOD, TRANSACTION_TYPE, RESTAURANT_ID, CITY, HOME_CITY, USER_GENDER,
    DEVICE_ID, IP_ADDRESS, DEVICE_TYPE, OS_VERSION,
)
OPTIONAL_NUMERIC_COLUMNS = (USER_AGE,)

# Every column of the contract, in the order the generator writes them (and the SQL source returns them).
CONTRACT_COLUMNS = (
    TRANSACTION_ID, TIMESTAMP, AMOUNT, CURRENCY, PAYMENT_METHOD, TRANSACTION_TYPE, USER_ID, HOME_CITY, USER_AGE,
    USER_GENDER, DEVICE_ID, IP_ADDRESS, DEVICE_TYPE, OS_VERSION, RESTAURANT_ID, CITY, LABEL, FRAUD_SCENARIO,
)

# Columns ingestion adds.
EVENT_TIME = "event_time_utc"  # int64 seconds since the Unix epoch, UTC
TIME_OF_DAY = "time_of_day"  # slice only (Lima local time bucket); not a model feature
MISSING = ""  # the value of a missing string after ingestion

# --------------------------------------------------------------------------------------------
# Model inputs: what serving_default takes (raw, after ingestion's standardisation); the behavioural
# features are added below (MODEL_INPUTS).
# --------------------------------------------------------------------------------------------
NUMERIC_FEATURES = (AMOUNT, USER_AGE)  # float; NaN means missing (median-imputed in Transform)
CATEGORICAL_FEATURES = (
    CURRENCY, PAYMENT_METHOD, TRANSACTION_TYPE, CITY, HOME_CITY, USER_GENDER, DEVICE_TYPE,
    OS_VERSION, RESTAURANT_ID,
)
SINGLE_ROW_INPUTS = NUMERIC_FEATURES + (EVENT_TIME,) + CATEGORICAL_FEATURES

# Carried in the examples for slicing, joins and tracing, never fed to the model.
PASSTHROUGH_STRING_COLUMNS = (TRANSACTION_ID, USER_ID, DEVICE_ID, IP_ADDRESS, FRAUD_SCENARIO, TIME_OF_DAY)

# Slices the Evaluator reports (besides overall).
SLICE_COLUMNS = (CITY, PAYMENT_METHOD, TIME_OF_DAY)

# --------------------------------------------------------------------------------------------
# Domain constants
# --------------------------------------------------------------------------------------------
LIMA_UTC_OFFSET_HOURS = -5  # Peru has no daylight saving time
LIMA_UTC_OFFSET_S = LIMA_UTC_OFFSET_HOURS * 3600  # Lima local seconds = UTC seconds + this (fraud.timeutil)
DAY_S = 86400
USD_TO_PEN = 3.75  # fixed rate used to express USD charges in PEN

# Cities with real coordinates (lat, lon). Keys are the canonical spelling used in the data.
CITY_COORDS = {
    "Lima": (-12.0464, -77.0428),
    "Cusco": (-13.5320, -71.9675),
    "Arequipa": (-16.4090, -71.5375),
    "Trujillo": (-8.1118, -79.0288),
    "Piura": (-5.1945, -80.6328),
    "Chiclayo": (-6.7714, -79.8409),
    "Iquitos": (-3.7491, -73.2538),
    "Puno": (-15.8402, -70.0219),
    "Paracas": (-13.8340, -76.2500),
    "Mancora": (-4.1039, -81.0475),
    # Foreign home cities of tourists.
    "Santiago": (-33.4489, -70.6693),
    "Buenos Aires": (-34.6037, -58.3816),
    "Bogota": (4.7110, -74.0721),
    "Sao Paulo": (-23.5505, -46.6333),
    "New York": (40.7128, -74.0060),
    "Madrid": (40.4168, -3.7038),
}

TIME_OF_DAY_BUCKETS = (  # (name, first Lima hour, last Lima hour inclusive)
    ("night", 0, 5),
    ("morning", 6, 11),
    ("lunch", 12, 15),
    ("afternoon", 16, 18),
    ("dinner", 19, 23),
)


def time_of_day(lima_hour: int) -> str:
    for name, first, last in TIME_OF_DAY_BUCKETS:
        if first <= lima_hour <= last:
            return name
    raise ValueError(f"hour out of range: {lima_hour}")


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    r = 6371.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


# --------------------------------------------------------------------------------------------
# Transformed feature names (Transform output, Trainer input)
# --------------------------------------------------------------------------------------------
def transformed_name(key: str) -> str:
    return f"{key}_xf"


AMOUNT_PEN_LOG = "amount_pen_log_xf"
AMOUNT_MISSING = "amount_missing_xf"
AGE_MISSING = "user_age_missing_xf"
HOUR_SIN = "hour_sin_xf"
HOUR_COS = "hour_cos_xf"
DOW_SIN = "dow_sin_xf"
DOW_COS = "dow_cos_xf"
IS_NIGHT = "is_night_xf"
IS_WEEKEND = "is_weekend_xf"
DISTANCE_LOG = "home_distance_log_xf"
DISTANCE_MISSING = "home_distance_missing_xf"
IS_FOREIGN_CURRENCY = "is_usd_xf"

DENSE_TRANSFORMED_FEATURES = (
    transformed_name(AMOUNT), AMOUNT_PEN_LOG, AMOUNT_MISSING, transformed_name(USER_AGE), AGE_MISSING,
    HOUR_SIN, HOUR_COS, DOW_SIN, DOW_COS, IS_NIGHT, IS_WEEKEND, DISTANCE_LOG, DISTANCE_MISSING,
    IS_FOREIGN_CURRENCY,
)
CATEGORICAL_TRANSFORMED_FEATURES = tuple(transformed_name(k) for k in CATEGORICAL_FEATURES)
VOCAB_TOP_K = 200
# tf.Transform's vocabularies leave out the empty string, so a missing value ("") would share the OOV bucket with
# unseen ones; Transform maps it to this token first, which makes "missing" a category of its own.
MISSING_CATEGORY = "<missing>"
OOV_BUCKETS = 1


def vocabulary_name(key: str) -> str:
    return f"vocab_{key}"


# --------------------------------------------------------------------------------------------
# Evaluation metric names (EvalConfig, blessing thresholds, summary, report)
# --------------------------------------------------------------------------------------------
METRIC_PR_AUC = "pr_auc"  # average precision (area under the PR curve, interpolation "careful")
METRIC_ROC_AUC = "roc_auc"
METRIC_PRECISION = "precision"
METRIC_RECALL = "recall"
METRIC_CALIBRATION = "calibration"  # mean prediction / mean label
METRIC_EXAMPLE_COUNT = "example_count"
METRIC_MEAN_LABEL = "mean_label"
METRIC_MEAN_PREDICTION = "mean_prediction"
METRIC_RECALL_AT_1PCT_FPR = "recall_at_1pct_fpr"  # sensitivity at 99% specificity
METRIC_CARD_PRECISION = "card_precision_at_k"  # fraud.tfma_metrics.CardPrecisionAtK
METRIC_CALIBRATION_PLOT = "calibration_plot"
METRIC_CONFUSION_MATRIX_PLOT = "confusion_matrix_plot"
# TFMA's exact confusion matrices at the thresholds recorded with the models (operating, decline, the
# baseline's operating threshold): set by the Evaluator at run time (components/evaluator.py).
METRIC_OPERATING_MATRICES = "operating_confusion_matrices"
DEFAULT_CARD_PRECISION_K = 100
# The metrics the run summary shows, in order.
HEADLINE_METRICS = (METRIC_PR_AUC, METRIC_ROC_AUC, METRIC_RECALL_AT_1PCT_FPR, METRIC_CARD_PRECISION,
                    METRIC_PRECISION, METRIC_RECALL, METRIC_CALIBRATION, METRIC_EXAMPLE_COUNT)
# TFMA model names in the EvalConfig: the candidate and the last blessed model it is compared with.
CANDIDATE = "candidate"
BASELINE = "baseline"

# The reference gate (fraud.reference): simple models trained on the candidate's train split and inputs; the
# candidate is blessed only if its eval PR-AUC is at least the best reference's minus a tolerance.
REFERENCE_LOGISTIC = "logistic_regression"  # hashed one-hot categories (sparse), scaled numeric inputs
REFERENCE_BOOSTED = "gradient_boosted_trees"  # scikit-learn's histogram GBT, native categories + frequencies
REFERENCES = (REFERENCE_LOGISTIC, REFERENCE_BOOSTED)
REFERENCE_FILE = "reference_gate.json"  # inside the gate's blessing artifact
PROP_REFERENCE_PR_AUC = "reference_pr_auc"  # the best reference's eval PR-AUC (blessing artifact property)
PROP_REFERENCE_PASSED = "reference_passed"  # 1 if the candidate passed the reference gate

# Split names written by ingestion.
SPLIT_TRAIN = "train"
SPLIT_VALID = "valid"  # last days before eval: early stopping, never used for blessing
SPLIT_EVAL = "eval"
SPLITS = (SPLIT_TRAIN, SPLIT_VALID, SPLIT_EVAL)


def split_dir(artifact_uri: str, split: str) -> str:
    """The folder of one split inside a TFX artifact (Examples, statistics, anomalies): TFX's layout."""
    return os.path.join(str(artifact_uri), f"Split-{split}")


# --------------------------------------------------------------------------------------------
# Pipeline layout: component ids, artifact properties and file names
# --------------------------------------------------------------------------------------------
# Component ids, in execution order (the pipeline, its progress, the summary and the report use them).
NODE_EXAMPLE_GEN = "FraudExampleGen"
NODE_BEHAVIOUR = "BehaviouralFeatures"
# TensorFlow's C++ log level for our commands: 3 hides the CUDA plugin registration errors that every import
# prints on a machine without a GPU (TF's real errors still reach us as Python exceptions). Set
# TF_CPP_MIN_LOG_LEVEL=0 in the environment to see TF's C++ logs again.
TF_QUIET_LOG_LEVEL = "3"

NODE_STATISTICS = "StatisticsGen"
NODE_SCHEMA = "ImportSchemaGen"
NODE_EXAMPLE_VALIDATOR = "ExampleValidator"
NODE_VALIDATION_GATE = "DataValidationGate"
NODE_TRANSFORM = "Transform"
NODE_TRAINER = "Trainer"
NODE_THRESHOLD = "OperatingThresholdSelector"
NODE_RESOLVER = "latest_blessed_model_resolver"
NODE_EVALUATOR = "Evaluator"
NODE_REFERENCE_GATE = "ReferenceGate"
NODE_PUSHER = "Pusher"
COMPONENT_IDS = (
    NODE_EXAMPLE_GEN, NODE_BEHAVIOUR, NODE_STATISTICS, NODE_SCHEMA, NODE_EXAMPLE_VALIDATOR, NODE_VALIDATION_GATE,
    NODE_TRANSFORM, NODE_TRAINER, NODE_THRESHOLD, NODE_RESOLVER, NODE_EVALUATOR, NODE_REFERENCE_GATE, NODE_PUSHER,
)

# Custom properties of the Examples artifact written by ingestion.
PROP_ROWS_IN = "rows_in"
PROP_IMPUTED_COLUMNS = "imputed_columns"
PROP_PAYLOAD_FORMAT = "payload_format"
# 1: every record holds every feature with one value (this project's writers; the behavioural features keep it).
# The in-process statistics (components/statistics.py) need it; other examples take TFDV's Beam path.
PROP_DENSE_EXAMPLES = "dense_examples"


def prop_rows(split: str) -> str:
    return f"rows_{split}"


def prop_fraud(split: str) -> str:
    return f"fraud_{split}"


def prop_start(split: str) -> str:
    return f"start_{split}"


def prop_end(split: str) -> str:
    return f"end_{split}"


PROP_ANOMALY_COUNT = "anomaly_count"  # validated Schema artifact
# Custom properties of the Model artifact that carries the operating threshold.
PROP_THRESHOLD = "operating_threshold"
PROP_BUDGET = "alerts_per_day_budget"
PROP_THRESHOLD_SPLIT = "threshold_split"
PROP_DECLINE_THRESHOLD = "decline_threshold"

# Files.
METADATA_FILE = "metadata.sqlite"  # ML Metadata, in the pipeline root
ARTIFACTS_DIR = "artifacts"  # TFX's pipeline_root, inside the pipeline root
LOGS_DIR = "logs"
AIRFLOW_PLANS_DIR = "airflow_plans"  # the compiled pipeline the Airflow DAG file reads (pipeline/airflow_plan.py), in the pipeline root
REPORTS_DIR = "reports"
SCHEMA_FILE = "schema.pbtxt"  # the file inside a Schema artifact (and schema/schema.pbtxt in the repo)
FEATURE_STATS_FILE = "FeatureStats.pb"  # inside a statistics split folder
SCHEMA_DIFF_FILE = "SchemaDiff.pb"  # inside an anomalies split folder
EXAMPLES_FILE_PREFIX = "data_tfrecord"
EXTRA_ASSETS_DIR = "assets.extra"  # TF Serving ignores unknown files here; it reads the warm-up file
WARMUP_FILE = os.path.join(EXTRA_ASSETS_DIR, "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many warm-up records
THRESHOLD_FILE = os.path.join(EXTRA_ASSETS_DIR, "operating_threshold.json")
SAVED_MODEL_FILE = "saved_model.pb"


# --------------------------------------------------------------------------------------------
# Behavioural features (fraud.behaviour): computed from each entity's history strictly before the
# transaction, by the offline Beam component and by the online state with the same functions.
# --------------------------------------------------------------------------------------------
BEHAVIOUR_WINDOWS = (("1h", 3600), ("1d", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400))
RESTAURANT_WINDOWS = (("1d", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400))
LABEL_DELAY_DAYS = 7  # fraud labels arrive late: the restaurant fraud rates only use labels this old
# The restaurant's confirmed fraud rate over several windows of labels, each ending LABEL_DELAY_DAYS back: a
# compromise that lasts days shows in the short window long before it moves the 30-day rate.
RESTAURANT_FRAUD_WINDOWS = (("1d", 1), ("7d", 7), ("30d", 30))  # (name, days)
RESTAURANT_FRAUD_WINDOW_DAYS = max(days for _, days in RESTAURANT_FRAUD_WINDOWS)  # the widest: what state keeps

# The card's own confirmed fraud rate the same way (labels at least LABEL_DELAY_DAYS old): a card with a
# chargeback a week ago that is still being used.
USER_FRAUD_WINDOWS = (("7d", 7), ("30d", 30))  # (name, days)
USER_FRAUD_WINDOW_DAYS = max(days for _, days in USER_FRAUD_WINDOWS)


def user_fraud_rate(window: str) -> str:
    """The feature name of the card's delayed fraud rate over one of USER_FRAUD_WINDOWS."""
    return f"user_fraud_rate_delayed_{window}"


USER_FRAUD_RATES = tuple(user_fraud_rate(w) for w, _ in USER_FRAUD_WINDOWS)
USER_BEHAVIOUR_FEATURES = tuple(
    f"user_{stat}_{w}" for w, _ in BEHAVIOUR_WINDOWS for stat in ("txn_count", "amount_sum", "amount_mean")
) + (
    "user_amount_ratio_30d", "user_secs_since_prev", "user_distinct_cities_1d", "user_distinct_restaurants_1d",
    "user_travel_speed_kmh", "user_device_is_new", "user_anomaly_score",
) + USER_FRAUD_RATES
DEVICE_BEHAVIOUR_FEATURES = ("device_distinct_users_30d", "device_txn_count_1d")


def restaurant_fraud_rate(window: str) -> str:
    """The feature name of the restaurant's delayed fraud rate over one of RESTAURANT_FRAUD_WINDOWS."""
    return f"restaurant_fraud_rate_delayed_{window}"


RESTAURANT_FRAUD_RATES = tuple(restaurant_fraud_rate(w) for w, _ in RESTAURANT_FRAUD_WINDOWS)
RESTAURANT_BEHAVIOUR_FEATURES = tuple(f"restaurant_txn_count_{w}" for w, _ in RESTAURANT_WINDOWS) + \
    RESTAURANT_FRAUD_RATES
BEHAVIOUR_FEATURES = USER_BEHAVIOUR_FEATURES + DEVICE_BEHAVIOUR_FEATURES + RESTAURANT_BEHAVIOUR_FEATURES
# A card's first transaction, on a device (cold start): the behavioural features that are not 0 then. fraud.behaviour
# computes them (tests/unit/test_behaviour.py holds this equal); clients' examples (serving/example.py) use them.
FIRST_TRANSACTION_FEATURES = {"user_amount_ratio_30d": 1.0, "user_secs_since_prev": float(30 * DAY_S),
                              "user_device_is_new": 1.0, "user_anomaly_score": 2.0}

# Drift limits (schema/schema.pbtxt, written by scripts/make_schema.py) are set on every model input except the
# event time (train and eval are disjoint in time by construction). Drift of these raw single-row inputs beyond
# their limit stops the pipeline; drift of any other input beyond its limit is a warning, shown by the
# DataValidationGate and the report: behavioural features move between train and eval by construction (the
# history windows are still filling in the first weeks of train), so they must be watched, not gated.
DRIFT_BLOCKING_FEATURES = (AMOUNT, CURRENCY, PAYMENT_METHOD, TRANSACTION_TYPE, CITY, DEVICE_TYPE)
DRIFT_UNMEASURED = (EVENT_TIME,)

# Every z-scored model input is clipped to +-this many standard deviations (transform_module): the training data
# never reaches it, and a client's absurd value cannot turn the score into NaN.
Z_SCORE_CLIP = 50.0

FEATURE_SET_SINGLE_ROW = "single_row"
FEATURE_SET_BEHAVIOURAL = "behavioural"
FEATURE_SETS = (FEATURE_SET_SINGLE_ROW, FEATURE_SET_BEHAVIOURAL)
# Keys of the Transform's and the Trainer's custom_config (set by create_pipeline).
CONFIG_FEATURE_SET = "feature_set"
CONFIG_SEED = "seed"
CONFIG_MIN_VALID_ROC_AUC = "min_valid_roc_auc"  # the Trainer fails below this validation ROC-AUC


# Raw inputs of the default (behavioural) model's serving_default signature.
MODEL_INPUTS = SINGLE_ROW_INPUTS + BEHAVIOUR_FEATURES


def model_inputs(feature_set: str = FEATURE_SET_BEHAVIOURAL) -> tuple[str, ...]:
    """Raw inputs of the serving signature for a feature set."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {FEATURE_SETS}")
    return MODEL_INPUTS if feature_set == FEATURE_SET_BEHAVIOURAL else SINGLE_ROW_INPUTS


def input_kind(key: str) -> str:
    """'float', 'int' or 'string': the dtype of a raw model input (tf.float32, tf.int64, tf.string)."""
    if key in NUMERIC_FEATURES or key in BEHAVIOUR_FEATURES:
        return "float"
    if key == EVENT_TIME:
        return "int"
    if key in CATEGORICAL_FEATURES:
        return "string"
    raise KeyError(f"{key!r} is not a model input")


def dense_transformed_features(feature_set: str = FEATURE_SET_BEHAVIOURAL) -> tuple[str, ...]:
    extra = tuple(transformed_name(k) for k in BEHAVIOUR_FEATURES) if feature_set == FEATURE_SET_BEHAVIOURAL else ()
    return DENSE_TRANSFORMED_FEATURES + extra
