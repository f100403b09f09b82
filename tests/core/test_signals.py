import os
import signal
import threading

import pytest

from lumbar_bench.core.signals import terminate_as_interrupt


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_in_the_block_interrupts_and_the_old_handler_comes_back(sig):
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
        os.kill(os.getpid(), sig)
        for _ in range(1000):  # Python runs the handler between bytecodes
            pass
    assert signal.getsignal(sig) is before


def test_outside_the_main_thread_it_changes_nothing():
    seen = []

    def body():
        with terminate_as_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [before]
