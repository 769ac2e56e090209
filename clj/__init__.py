"""clj: continual learning in JAX."""
import os as _os
import re as _re


def simulated_device_threads(num_devices: int) -> int:
    """XLA:CPU pool size (``PJRT_NPROC``) for ``num_devices`` simulated host
    devices: 4 threads per device, at least the core count (see below)."""
    return max(_os.cpu_count() or 1, 4 * int(num_devices))


def _cpu_threads_for_simulated_devices() -> None:
    """Gives XLA:CPU enough threads for collectives between simulated devices.

    With ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` the CPU client
    sizes its thread pools ``max(cores, N)``. One program can run two
    independent collectives (an all-gather and an all-reduce) at once on each
    device; on a 2-core machine the first two devices then hold all ``N``
    threads inside those collectives while the other devices never get one, and
    XLA aborts after 40 s ("Expected 4 threads to join the rendezvous, only 2
    arrived"). ``PJRT_NPROC`` sets the pool size; it is read when the backend
    starts, so it is set here, before any computation, and only when the user
    has set neither it nor ``NPROC``. No effect on GPUs/TPUs or on one device.
    """
    if "PJRT_NPROC" in _os.environ or "NPROC" in _os.environ:
        return
    m = _re.search(r"--xla_force_host_platform_device_count=(\d+)", _os.environ.get("XLA_FLAGS", ""))
    if m and int(m.group(1)) > 1:
        _os.environ["PJRT_NPROC"] = str(simulated_device_threads(int(m.group(1))))


_cpu_threads_for_simulated_devices()
