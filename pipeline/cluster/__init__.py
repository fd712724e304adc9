"""The pipeline on a cluster: Argo Workflow rendering, submission, and the step entry points.

``render`` turns a plan into an Argo Workflow (plain dicts shaped like argoproj.io/v1alpha1),
``tasks`` is what each step's container runs (``qubelet task …``), ``submit`` creates the
Workflow through the Kubernetes API. Only ``tasks`` imports the pipeline's heavy stages.
"""

__all__ = ["cli", "render", "resources", "submit", "tasks"]
