"""tf.Transform preprocessing: cleansing and single-row features, run inside the serving graph.

Everything here is exported with the model (TFX's Transform graph), so training and serving apply the
same imputation, scaling and vocabularies: no training/serving skew. Names come from fraud.features.

Imputation (documented in README "Data contract"):
- amount, user_age: NaN or +-Infinity -> median over the train split; a *_missing flag keeps the information.
  A negative amount counts as 0 in the log amount. Every z-score is clipped to +-F.Z_SCORE_CLIP, so any finite
  or non-finite number a client sends gives a finite score in [0, 1].
- behavioural features: NaN or +-Infinity -> 0, the cold-start value.
- strings: "" (missing) becomes F.MISSING_CATEGORY, its own vocabulary entry; unseen values go to one OOV bucket.
- home/restaurant city unknown or missing: distance 0 plus a missing flag.
"""
from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_transform as tft

from fraud import features as F
from fraud.settings import required_config

def _as_2d(x):
    """Dense [batch, 1]: FixedLen features already are; tolerate [batch] for ad-hoc callers."""
    if isinstance(x, tf.SparseTensor):
        default = "" if x.dtype == tf.string else (float("nan") if x.dtype.is_floating else 0)
        x = tf.sparse.to_dense(tf.sparse.reset_shape(x, [x.dense_shape[0], 1]), default_value=default)
    if x.shape.rank == 1:
        x = tf.expand_dims(x, -1)
    return x


def _missing(x):
    """NaN, and also +-Infinity (a client's nonsense value): imputed like a missing value, never propagated."""
    return tf.logical_not(tf.math.is_finite(x))


def _median(x, missing):
    """Median of the present values over the train split (an analyzer: a constant in the graph)."""
    boundaries = tft.quantiles(tf.boolean_mask(x, tf.logical_not(missing)), num_buckets=2, epsilon=0.001)
    return tf.reshape(boundaries, [-1])[0]


def _z_score(raw, missing, imputed):
    """Standardise `imputed` with the mean/std of the *present* raw values.

    Every analyzer here reads raw inputs only, never another analyzer's output, so the whole
    preprocessing_fn is a single tf.Transform phase (multi-phase analysis uses tf.Transform's deep-copy
    optimisation, which is broken with Beam 2.74).
    """
    present = tf.boolean_mask(raw, tf.logical_not(missing))
    return _standardised(imputed, tft.mean(present), tft.var(present))


def _standardised(x, mean, var):
    """(x - mean) / std, clipped to +-F.Z_SCORE_CLIP: a constant feature (variance 0) scales to 0, not NaN, and
    an absurd value a client sends (an amount of 1e38) cannot overflow the model into a NaN score."""
    z = (x - mean) / tf.sqrt(tf.maximum(var, 1e-12))
    return tf.clip_by_value(z, -F.Z_SCORE_CLIP, F.Z_SCORE_CLIP)


def _city_lookup(index: int):
    keys = tf.constant(list(F.CITY_COORDS))
    values = tf.constant([coords[index] for coords in F.CITY_COORDS.values()], dtype=tf.float32)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=math.nan)


def _haversine_km(lat1, lon1, lat2, lon2):
    rad = math.pi / 180.0
    dlat, dlon = (lat2 - lat1) * rad, (lon2 - lon1) * rad
    a = tf.sin(dlat / 2) ** 2 + tf.cos(lat1 * rad) * tf.cos(lat2 * rad) * tf.sin(dlon / 2) ** 2
    return 2.0 * 6371.0 * tf.asin(tf.sqrt(tf.clip_by_value(a, 0.0, 1.0)))


def home_distance_km(home_city, city):
    """Great-circle km between the guest's home city and the restaurant's city (NaN if either unknown)."""
    lat, lon = _city_lookup(0), _city_lookup(1)
    return _haversine_km(lat.lookup(home_city), lon.lookup(home_city), lat.lookup(city), lon.lookup(city))


def lima_hour_and_weekday(event_time_utc):
    """Hour 0-23 and weekday (Monday=0) in Lima local time; 1970-01-01 was a Thursday (=3)."""
    local = tf.cast(event_time_utc, tf.int64) + F.LIMA_UTC_OFFSET_S  # the graph twin of fraud.timeutil.to_lima
    hour = tf.math.floormod(tf.math.floordiv(local, 3600), 24)
    weekday = tf.math.floormod(tf.math.floordiv(local, 86400) + 3, 7)
    return hour, weekday


def preprocessing_fn(inputs, custom_config=None):
    """TFX calls this with the Transform component's custom_config ({F.CONFIG_FEATURE_SET: ...}, set by
    create_pipeline from the settings)."""
    feature_set = required_config(custom_config, F.CONFIG_FEATURE_SET)
    out = {}

    raw_amount = tf.cast(_as_2d(inputs[F.AMOUNT]), tf.float32)
    amount_missing = _missing(raw_amount)
    amount = tf.where(amount_missing, _median(raw_amount, amount_missing), raw_amount)  # median imputation
    is_usd = tf.equal(_as_2d(inputs[F.CURRENCY]), "USD")

    def to_pen(x):
        return tf.where(is_usd, x * F.USD_TO_PEN, x)

    def log_amount(x):  # a negative amount (a refund sent as a payment) counts as 0, not log1p(-5) = NaN
        return tf.math.log1p(tf.maximum(x, 0.0))

    out[F.transformed_name(F.AMOUNT)] = _z_score(log_amount(raw_amount), amount_missing, log_amount(amount))
    out[F.AMOUNT_PEN_LOG] = _z_score(
        log_amount(to_pen(raw_amount)), amount_missing, log_amount(to_pen(amount)))
    out[F.AMOUNT_MISSING] = tf.cast(amount_missing, tf.float32)
    out[F.IS_FOREIGN_CURRENCY] = tf.cast(is_usd, tf.float32)

    raw_age = tf.cast(_as_2d(inputs[F.USER_AGE]), tf.float32)
    age_missing = _missing(raw_age)
    age = tf.where(age_missing, _median(raw_age, age_missing), raw_age)
    out[F.transformed_name(F.USER_AGE)] = _z_score(raw_age, age_missing, age)
    out[F.AGE_MISSING] = tf.cast(age_missing, tf.float32)

    hour, weekday = lima_hour_and_weekday(_as_2d(inputs[F.EVENT_TIME]))
    hour_angle = tf.cast(hour, tf.float32) * (2 * math.pi / 24)
    day_angle = tf.cast(weekday, tf.float32) * (2 * math.pi / 7)
    out[F.HOUR_SIN], out[F.HOUR_COS] = tf.sin(hour_angle), tf.cos(hour_angle)
    out[F.DOW_SIN], out[F.DOW_COS] = tf.sin(day_angle), tf.cos(day_angle)
    out[F.IS_NIGHT] = tf.cast(hour < 6, tf.float32)
    out[F.IS_WEEKEND] = tf.cast(weekday >= 5, tf.float32)

    distance = home_distance_km(_as_2d(inputs[F.HOME_CITY]), _as_2d(inputs[F.CITY]))
    distance_missing = tf.math.is_nan(distance)
    log_distance = tf.math.log1p(tf.where(distance_missing, 0.0, distance))
    out[F.DISTANCE_LOG] = _z_score(log_distance, distance_missing, log_distance)
    out[F.DISTANCE_MISSING] = tf.cast(distance_missing, tf.float32)

    for key in F.CATEGORICAL_FEATURES:
        value = _as_2d(inputs[key])
        value = tf.where(tf.equal(value, F.MISSING), F.MISSING_CATEGORY, value)  # vocabularies drop ""
        out[F.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            value, top_k=F.VOCAB_TOP_K, num_oov_buckets=F.OOV_BUCKETS,
            vocab_filename=F.vocabulary_name(key))

    if feature_set == F.FEATURE_SET_BEHAVIOURAL:
        # Counts, sums, ratios, speeds: heavy-tailed and >= 0, so log1p then z-score. An unknown value (NaN or
        # +-Infinity from a client) counts as 0, the cold-start value. The features are z-scored as the columns of
        # one matrix: one mean and one variance analyzer for all of them instead of two per feature. Each analyzer
        # is traced, built into Beam stages and saved on its own, which made up most of Transform's fixed cost.
        columns = [tf.math.log1p(tf.maximum(tf.where(_missing(x), 0.0, x), 0.0))
                   for x in (tf.cast(_as_2d(inputs[key]), tf.float32) for key in F.BEHAVIOUR_FEATURES)]
        matrix = tf.concat(columns, axis=1)  # [batch, features]
        scaled = _standardised(matrix, tft.mean(matrix, reduce_instance_dims=False),
                               tft.var(matrix, reduce_instance_dims=False))
        for i, key in enumerate(F.BEHAVIOUR_FEATURES):
            out[F.transformed_name(key)] = scaled[:, i:i + 1]

    if F.LABEL in inputs:  # absent at serving time
        out[F.LABEL] = _as_2d(inputs[F.LABEL])
    return out
