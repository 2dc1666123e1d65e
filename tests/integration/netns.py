"""
netns.py - network namespaces made by a test, for faults loopback cannot show: a peer cut off
by the network, which sends neither FIN nor RST.

    a = netns.Netns("sy-a")                  # ip netns add, lo up; deleted at cleanup
    b = netns.Netns("sy-b")
    netns.veth(a, "10.77.0.1", b, "10.77.0.2")
    with b.entered():                         # this thread, and what it starts, is in b
        cluster = harness.PgCluster(...)      # listens in b
    b.cut()  / b.heal()                       # b's end of the link down / up again

A thread's network namespace is its own (setns(2) on the calling thread): sockets it makes
and processes it starts stay in the namespace after it leaves. Nothing here touches the
host's namespace: every link is between namespaces the test made.
"""

import contextlib
import ctypes
import os
import re
import subprocess

import harness

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        harness.fail("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        harness.fail("setns: %s" % os.strerror(e))


class Netns:
    def __init__(self, name):
        self.name = "%s-%d" % (name, os.getpid())
        self.links = []
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        _ip("netns", "add", self.name)
        harness._register(self)
        _ip("-n", self.name, "link", "set", "lo", "up")

    @contextlib.contextmanager
    def entered(self):
        """Run the body with this thread in the namespace; back to the old one after."""
        old = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        new = os.open("/run/netns/" + self.name, os.O_RDONLY)
        try:
            _setns(new)
            yield self
        finally:
            _setns(old)
            os.close(old)
            os.close(new)

    def cut(self, silent=False):
        """Take this namespace's links down: what is in flight to or from it is dropped.
        silent: the far ends first pin this end's address to its MAC (a permanent neighbour
        entry), so a new connection to it is not refused by a failed ARP (EHOSTUNREACH in
        about 3 s) but sends SYNs into nothing, as across a real partition."""
        for dev in self.links:
            if silent:
                mac = re.search(r"link/ether (\S+)", _ip("-n", self.name, "-o", "link", "show", "dev", dev)).group(1)
                for addr in re.findall(r"inet (\S+)/", _ip("-n", self.name, "-o", "-4", "addr", "show", "dev", dev)):
                    ns, peer = self.peers[dev]
                    _ip("-n", ns, "neigh", "replace", addr, "lladdr", mac, "dev", peer, "nud", "permanent")
            _ip("-n", self.name, "link", "set", dev, "down")

    def heal(self):
        """Bring the links up again, and return once traffic can pass: both ends carry (a
        veth end is up only when its peer is), and neither side remembers the neighbour it
        failed to reach while the link was down (a connect would get EHOSTUNREACH at once)."""
        for dev in self.links:
            _ip("-n", self.name, "link", "set", dev, "up")
        ends = [(self.name, dev) for dev in self.links] + list(getattr(self, "peers", {}).values())
        for ns, dev in ends:
            harness.wait_until(lambda: "state UP" in _ip("-n", ns, "-o", "link", "show", "dev", dev), timeout=10,
                               what="link %s in %s up" % (dev, ns))
            _ip("-n", ns, "neigh", "flush", "dev", dev)

    def cleanup(self):
        r = subprocess.run(["ip", "netns", "del", self.name], capture_output=True, text=True)
        return [] if r.returncode == 0 else ["ip netns del %s: %s" % (self.name, r.stderr.strip())]


def veth(a, addr_a, b, addr_b, prefix=24):
    """A veth pair between namespaces a and b, with addr_a in a and addr_b in b."""
    da, db = "v%d%s" % (len(a.links), a.name[-6:]), "v%d%s" % (len(b.links), b.name[-6:])
    da, db = da[:15], ("w" + db[1:])[:15]
    _ip("link", "add", da, "netns", a.name, "type", "veth", "peer", "name", db, "netns", b.name)
    for ns, dev, addr in ((a, da, addr_a), (b, db, addr_b)):
        _ip("-n", ns.name, "addr", "add", "%s/%d" % (addr, prefix), "dev", dev)
        _ip("-n", ns.name, "link", "set", dev, "up")
        ns.links.append(dev)
    # each end knows its peer, so a heal can wait for both
    a.peers = dict(getattr(a, "peers", {}), **{da: (b.name, db)})
    b.peers = dict(getattr(b, "peers", {}), **{db: (a.name, da)})
