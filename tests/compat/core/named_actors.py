# compat: topic doc/source/ray-core/actors/named-actors.rst
"""Named actors: look one up by name, get_if_exists, namespaces, detached lifetime."""

import ray

ray.init(num_cpus=2, namespace="shop")


@ray.remote(num_cpus=0)
class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, name, n):
        self.items[name] = self.items.get(name, 0) + n
        return self.items[name]

    def count(self, name):
        return self.items.get(name, 0)


inventory = Inventory.options(name="inventory").remote()
inventory.add.remote("apple", 3)

# Any code in the same namespace can find the actor by its name.
found = ray.get_actor("inventory")
assert ray.get(found.count.remote("apple")) == 3


@ray.remote
def restock():
    handle = ray.get_actor("inventory")
    return ray.get(handle.add.remote("apple", 2))


assert ray.get(restock.remote()) == 5

# Creating a second actor with a taken name fails...
try:
    Inventory.options(name="inventory").remote()
except ValueError:
    print("name already taken")
else:
    raise AssertionError("two actors got the same name")

# ...unless get_if_exists asks for the existing one.
same = Inventory.options(name="inventory", get_if_exists=True).remote()
assert ray.get(same.count.remote("apple")) == 5
fresh = Inventory.options(name="warehouse", get_if_exists=True).remote()
assert ray.get(fresh.count.remote("apple")) == 0

# Names live in namespaces.
other_ns = Inventory.options(name="inventory", namespace="other").remote()
assert ray.get(other_ns.add.remote("pear", 1)) == 1
assert ray.get(ray.get_actor("inventory", namespace="other").count.remote("apple")) == 0
assert ray.get(ray.get_actor("inventory").count.remote("apple")) == 5

# A missing name raises ValueError.
try:
    ray.get_actor("no-such-actor")
except ValueError:
    print("no such actor")

# Detached actors outlive their creator until they are killed.
detached = Inventory.options(name="ledger", lifetime="detached").remote()
assert ray.get(detached.add.remote("coin", 1)) == 1
ray.kill(detached)
try:
    ray.get_actor("ledger")
except ValueError:
    print("killed detached actor is gone")
print("named actors ok")
ray.shutdown()
