"""Staged pipelines: stages over numpy arrays wired into a checked DAG."""

from __future__ import annotations

from workbench.pipeline.cached import CachedFeatures
from workbench.pipeline.custom import FunctionStage, stage
from workbench.pipeline.featurecache import FeatureCache, feature_caches
from workbench.pipeline.features import Aggregate, PCAProjection
from workbench.pipeline.graph import Pipeline, Prediction
from workbench.pipeline.inference import OnnxStage
from workbench.pipeline.postprocess import ConfidenceBuckets, LabelMap, Threshold, TopK
from workbench.pipeline.preprocess import Clip, Impute, MinMaxScale, OneHot, Ordinal, Standardize, Tokenize
from workbench.pipeline.signals import BusinessSignal
from workbench.pipeline.spec import STAGE_TYPES
from workbench.pipeline.stage import Stage, StageKind
from workbench.tensor import TensorSpec

__all__ = [
    "STAGE_TYPES", "Aggregate", "BusinessSignal", "CachedFeatures", "Clip", "ConfidenceBuckets", "FeatureCache",
    "FunctionStage", "Impute", "LabelMap",
    "MinMaxScale", "OneHot", "OnnxStage", "Ordinal", "PCAProjection", "Pipeline", "Prediction", "Stage",
    "StageKind", "Standardize", "TensorSpec", "Threshold", "Tokenize", "TopK", "feature_caches", "stage",
]
