"""Ray for one search, started and stopped in one place: a cluster joined, or a local Ray started.

    session = RaySession(verbose=False)
    session.join("auto", runtime_env)          # --address: count the cluster's resources (the plan)
    session.start_local(16, 4, runtime_env)    # one machine: after its data is ready (a data error needs no Ray)
    session.close()                            # Ray stopped, if this search started or joined it

A Ray the caller had already started is used as it is and left running.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from typing import Any

import ray

from ..errors import TunekitError
from .ray_api import NO_PRESTART, environment_kept, started_cluster_address


class RaySession:
    def __init__(self, verbose: bool, echo: Callable[[str], None] = print) -> None:
        self.verbose, self.echo = verbose, echo
        self.owned = False  # this search started or joined Ray, and stops it
        self.caller_started = ray.is_initialized()

    @property
    def _logging(self) -> dict[str, Any]:
        return {"log_to_driver": self.verbose, "logging_level": "INFO" if self.verbose else "WARNING"}

    def join(self, address: str, runtime_env: dict[str, Any] | None) -> None:
        """Connect to the cluster at ``address`` (a ``ray start`` cluster; ``auto``: ``resolve_auto``), failing
        within seconds if none answers."""
        if ray.is_initialized():
            return
        if address == "auto":
            address = resolve_auto()  # checked there
        else:
            check_address(address)
        try:
            ray.init(address=address, runtime_env=runtime_env, **self._logging)
        except (ConnectionError, RuntimeError) as e:  # no cluster there, or none running on this machine
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TunekitError(NO_CLUSTER.format(address=address, why=first[:160])) from None
        self.owned = True

    def start_local(self, cpus: float, gpus: float, runtime_env: dict[str, Any] | None) -> None:
        """A new local Ray of the search's own (dashboard off), unless one is running in this process."""
        if ray.is_initialized():
            return
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            self.echo("warning: RAY_AUTH_MODE=disabled: the local Ray's ports listen on every interface, so anyone "
                      "who can reach this machine can run code in it; unset it, or firewall the machine")
        # address="local": a new Ray of its own, even where `ray start` left a cluster running or
        # RAY_ADDRESS is set (without it ray.init joins those, and refuses num_cpus): --address joins
        with environment_kept(NO_PRESTART):
            os.environ.update(NO_PRESTART)  # read by Ray's processes as they start (ray_api's table)
            ray.init(address="local", num_cpus=int(cpus), num_gpus=int(math.ceil(gpus)), include_dashboard=False,
                     configure_logging=True, runtime_env=runtime_env, **self._logging)
        self.owned = True

    def check_shipped(self, spec) -> None:
        """A Ray the caller started must already ship the space's ``imports`` (the session's own does)."""
        if spec.imports and self.caller_started and not ray.get_runtime_context().runtime_env.get("py_modules"):
            raise TunekitError(f"imports {spec.imports}: Ray was started before the search, without them, so its "
                               f"trials could not import them: start it with ray.init(runtime_env="
                               f"{runtime_env(spec)!r}), or let the search start Ray")

    def close(self) -> None:
        if self.owned and ray.is_initialized():
            ray.shutdown()
        self.owned = False


def runtime_env(spec) -> dict[str, Any] | None:
    """What Ray ships to every worker of a search: the files of the space's ``imports`` (a user's models)."""
    from ..space_file import module_files

    return {"py_modules": module_files(spec.imports)} if spec.imports else None


def resolve_auto() -> str:
    """``--address auto``: the cluster ``ray start`` started on this machine, as the README says (``RAY_ADDRESS``
    if set, else the address ``ray start`` leaves in Ray's temp folder), checked to answer. Ray's own ``auto``
    falls back to any Ray it sees running here: another search's private local Ray among them, whose trials the
    joining search would share and which ends, with them, when that search does."""
    named = os.environ.get("RAY_ADDRESS") or "auto"  # empty is unset, as Ray reads it
    if named != "auto":
        address, found = named, f"RAY_ADDRESS={named}"
    else:
        address = started_cluster_address()
        if not address:
            raise TunekitError(NO_CLUSTER.format(address="auto", why="no 'ray start' cluster on this machine"))
        found = f"the 'ray start' cluster last started here, at {address},"
    try:
        check_address(address)
    except TunekitError:
        raise TunekitError(NO_CLUSTER.format(address="auto", why=f"{found} does not answer")) from None
    return address


NO_CLUSTER = ("--address {address}: no Ray cluster to join ({why}); start one with 'ray start --head' (on this "
              "machine, for --address auto) or leave --address out for a local run")


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail within seconds when a cluster address does not answer (instead of Ray's long retry)."""
    host, _, port = address.replace("ray://", "").rpartition(":")
    try:
        socket.create_connection((host or address, int(port or 6379)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise TunekitError(f"--address {address}: no Ray cluster answers there ({e}); start one with "
                           f"'ray start --head' or leave --address out for a local run") from None
