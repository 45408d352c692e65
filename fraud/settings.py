"""Typed, validated settings: built once by a runner (CLI, Airflow DAG), then passed as arguments."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud import features as F

DEFAULT_BEAM_ARGS = (
    "--runner=DirectRunner",  # named explicitly: Beam 2.74 otherwise tries to download its "prism" runner
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
)


def is_url(value: str) -> bool:
    """An SQLAlchemy URL (sqlite:///..., postgresql://...) rather than a directory of CSVs."""
    return "://" in value


class PipelineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: str  # a directory of CSVs, or an SQLAlchemy URL (sqlite:///..., postgresql://...)
    pipeline_root: Path
    serving_dir: Path
    pipeline_name: str = F.PIPELINE_NAME
    eval_days: int = Field(7, ge=1, le=365)
    valid_days: int = Field(7, ge=1, le=365)
    train_steps: int = Field(1000, ge=1, le=1_000_000)
    pr_auc_floor: float = Field(0.2, ge=0.0, le=1.0)
    regression_tolerance: float = Field(0.02, ge=0.0, le=1.0)
    operating_threshold: float = Field(0.3, gt=0.0, lt=1.0)
    feature_set: Literal["single_row", "behavioural"] = F.FEATURE_SET_BEHAVIOURAL
    label_delay_days: int = Field(F.LABEL_DELAY_DAYS, ge=0, le=120)
    alerts_per_day: float = Field(50.0, gt=0.0)
    beam_args: tuple[str, ...] = DEFAULT_BEAM_ARGS
    seed: int = 42

    @field_validator("pipeline_root", "serving_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return Path(os.path.abspath(os.path.expanduser(str(value))))

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_source(cls, value) -> str:
        value = str(value)
        if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
            # A relative SQLite path would change meaning under Airflow's working directory.
            value = "sqlite:///" + os.path.abspath(os.path.expanduser(value[len("sqlite:///"):]))
        if is_url(value):
            return value
        path = os.path.abspath(os.path.expanduser(value))
        if not os.path.isdir(path):
            raise ValueError(f"data directory {value!r} does not exist; create one with `fraudctl generate --out DIR`"
                             " (or pass an SQLAlchemy URL such as sqlite:///transactions.db)")
        return path

    @property
    def serving_model_dir(self) -> Path:
        """TF Serving's model base path: versions land in <serving_dir>/<model name>/<version>/."""
        return self.serving_dir / F.MODEL_NAME

    @property
    def metadata_path(self) -> Path:
        return self.pipeline_root / "metadata.sqlite"

    @property
    def artifacts_root(self) -> Path:
        return self.pipeline_root / "artifacts"

    def pipeline_kwargs(self) -> dict:
        """Arguments of pipeline.pipeline.create_pipeline()."""
        return dict(
            pipeline_name=self.pipeline_name,
            pipeline_root=str(self.artifacts_root),
            data_dir=str(self.data_dir),
            serving_model_dir=str(self.serving_model_dir),
            metadata_path=str(self.metadata_path),
            eval_days=self.eval_days,
            valid_days=self.valid_days,
            train_steps=self.train_steps,
            pr_auc_floor=self.pr_auc_floor,
            regression_tolerance=self.regression_tolerance,
            operating_threshold=self.operating_threshold,
            feature_set=self.feature_set,
            alerts_per_day=self.alerts_per_day,
            label_delay_days=self.label_delay_days,
            beam_pipeline_args=list(self.beam_args),
            seed=self.seed,
        )
