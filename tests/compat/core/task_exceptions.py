# compat: topic doc/source/ray-core/fault_tolerance/tasks.rst (catching application-level failures)
"""Errors in tasks and actors reach the caller: as RayTaskError, and as the user's own
exception type, with the original available as .cause."""

import ray

ray.init(num_cpus=2)


class InsufficientFunds(Exception):
    pass


@ray.remote
def withdraw(balance, amount):
    if amount > balance:
        raise InsufficientFunds(f"cannot take {amount} from {balance}")
    return balance - amount


assert ray.get(withdraw.remote(100, 30)) == 70

ref = withdraw.remote(10, 30)
try:
    ray.get(ref)
except InsufficientFunds as error:
    # The error is both the user's type and a RayTaskError.
    assert isinstance(error, ray.exceptions.RayTaskError)
    assert "cannot take 30 from 10" in str(error)
    print("caught the user's exception type")

try:
    ray.get(ref)
except ray.exceptions.RayTaskError as error:
    assert isinstance(error.cause, InsufficientFunds)
    assert str(error.cause) == "cannot take 30 from 10"
    print("caught RayTaskError with the cause")


@ray.remote
def uses(ref_value):
    return ref_value + 1


# A task whose argument failed fails too, with the original error.
try:
    ray.get(uses.remote(withdraw.remote(1, 2)))
except InsufficientFunds:
    print("the failure passed along the chain")


@ray.remote
class Account:
    def __init__(self):
        self.balance = 5

    def take(self, amount):
        if amount > self.balance:
            raise InsufficientFunds("actor says no")
        self.balance -= amount
        return self.balance


account = Account.remote()
try:
    ray.get(account.take.remote(50))
except InsufficientFunds as error:
    assert "actor says no" in str(error)
# An exception in a method does not kill the actor.
assert ray.get(account.take.remote(2)) == 3


@ray.remote
def not_picklable_error():
    import threading

    class LockError(Exception):
        def __init__(self):
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    raise LockError()


# Even an exception that cannot be pickled reaches the caller as a RayTaskError.
try:
    ray.get(not_picklable_error.remote())
except ray.exceptions.RayTaskError as error:
    assert "holds a lock" in str(error)
    print("unpicklable error still reported")
print("task exceptions ok")
ray.shutdown()
