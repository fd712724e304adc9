"""Reserve a cloud QPU with its provider before the pod binds (DRA device binding conditions).

The controller publishes the devices of a QPU with ``reservation:`` with binding conditions
(:mod:`dra_driver.slices`); the scheduler then holds a pod in PreBind until
:class:`~dra_driver.reservations.controller.ReservationController` has asked the provider
(:mod:`dra_driver.reservations.provider`, the adapter point for vendors) and written the
answer into the claim's ``status.devices[]`` (:mod:`dra_driver.reservations.status`). The
kubelet plugin hands the reservation to the container as env (:func:`status.reservation_env`).
"""

from __future__ import annotations
