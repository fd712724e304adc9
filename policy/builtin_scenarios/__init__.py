"""The built-in scenarios of ``qubelet policy eval``, as scenario files (``policy.scenario_files``).

``order.txt`` lists them in the order the evaluation runs them; each ``NAME.yaml`` is one
``version: v1`` scenario file, the same format ``--scenario-file`` reads.
"""

__all__: list[str] = []
