#!/usr/bin/env python3
"""Registers a saved MLflow model directory as the next version of NAME, with MLflow's own
client, as `mlflow.<flavor>.log_model(..., registered_model_name=NAME)` does: a run, a logged
model (`models:/m-...`) holding the directory's files, then a registered version of it.

    python tests/mlflow_register.py TRACKING_URI DIR NAME [--alias ALIAS] [--experiment E]
        [--artifact-location URI]

Prints the version number. Credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD or
MLFLOW_TRACKING_TOKEN, as for every MLflow client. Used by tests/it/mlflow.rs.
"""
import argparse

import mlflow
from mlflow import MlflowClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tracking_uri")
    ap.add_argument("dir")
    ap.add_argument("name")
    ap.add_argument("--alias")
    ap.add_argument("--experiment", default="nightshift-tests")
    ap.add_argument("--artifact-location")
    a = ap.parse_args()
    mlflow.set_tracking_uri(a.tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(a.experiment)
    experiment_id = (experiment.experiment_id if experiment else
                     client.create_experiment(a.experiment, artifact_location=a.artifact_location))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        model = mlflow.initialize_logged_model(name="model", source_run_id=run.info.run_id,
                                               experiment_id=experiment_id)
        client.log_model_artifacts(model.model_id, a.dir)
        mlflow.finalize_logged_model(model.model_id, "READY")
    version = mlflow.register_model(f"models:/{model.model_id}", a.name)
    if a.alias:
        client.set_registered_model_alias(a.name, a.alias, version.version)
    print(version.version)


if __name__ == "__main__":
    main()
