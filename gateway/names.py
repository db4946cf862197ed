"""The one check of Kubernetes object names (RFC 1123), for every module that takes a name from outside.

A namespace, a Notebook or a profile that the gateway accepts must be one the API server would accept
too: a name that passes here and fails there would half-write (a policy rule for a namespace that can
never exist), and one that fails here but not there would lock a user out of their own server.
"""

from __future__ import annotations

import re

# A label: a namespace, a Notebook, a Service, a ConfigMap key's owner. At most 63 characters.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# A subdomain: labels joined by dots, e.g. a PersistentVolumeClaim or a Secret. At most 253 characters.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_SUBDOMAIN_CHARS = 253


def is_dns_label(value: str) -> bool:
    """True for a DNS-1123 label: what Kubernetes accepts as a namespace or Notebook name."""
    return _DNS_LABEL.fullmatch(value) is not None


def is_dns_subdomain(value: str) -> bool:
    """True for a DNS-1123 subdomain: what Kubernetes accepts as a volume claim's or a Secret's name."""
    return len(value) <= MAX_SUBDOMAIN_CHARS and _DNS_SUBDOMAIN.fullmatch(value) is not None
