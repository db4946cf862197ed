"""The names Kubeflow gives meaning to: the annotations, labels, fields, ClusterRoles and service
accounts that its notebook controller, profile controller, KFAM and Jupyter web app read or write.

Defined here once; the gateway (and any test that would otherwise copy one) imports them from here.
The gateway's own names (`notebook-gateway.kubeflow.org/...`) live beside the code that owns them.
"""

from __future__ import annotations

# -- Notebooks: the notebook controller and the Jupyter web app ---------------------------------------

STOP_ANNOTATION = "kubeflow-resource-stopped"  # present (an RFC 3339 time): the controller scales to 0
CREATOR_ANNOTATION = "notebooks.kubeflow.org/creator"  # who created it, as the web app records
SERVER_TYPE_ANNOTATION = "notebooks.kubeflow.org/server-type"  # jupyter, group-one (VS Code), group-two (RStudio)
URI_REWRITE_ANNOTATION = "notebooks.kubeflow.org/http-rewrite-uri"
HEADERS_ANNOTATION = "notebooks.kubeflow.org/http-headers-request-set"
APP_LABEL = "app"  # the web app labels a Notebook `app: <name>`
NOTEBOOK_NAME_LABEL = "notebook-name"  # the controller labels a notebook's pod with its name

# -- Profiles and KFAM (contributors) ---------------------------------------------------------------

PROFILE_OWNER_FIELD = "owner"  # a Profile's `spec.owner`: {"kind": "User", "name": ...}
# What the profile controller annotates the namespace it makes with: the Profile owner's name. A
# Profile owns its namespace only when this matches (the controller refuses otherwise).
NAMESPACE_OWNER_ANNOTATION = "owner"
KFAM_USER_ANNOTATION = "user"  # on a contributor's RoleBinding: the user it is for
KFAM_ROLE_ANNOTATION = "role"  # and the role KFAM meant (admin, edit or view)
# The ClusterRoles KFAM binds contributors to.
KUBEFLOW_ADMIN, KUBEFLOW_EDIT, KUBEFLOW_VIEW = "kubeflow-admin", "kubeflow-edit", "kubeflow-view"
# The service accounts a profile namespace has; notebooks run as the editor.
EDITOR_ACCOUNT, VIEWER_ACCOUNT = "default-editor", "default-viewer"
