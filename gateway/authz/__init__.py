"""Authorization: the rules and their storage format (`rules`), the Casbin enforcer (`enforcer`), the authorizer
and its snapshot (`authorizer`), the editable policy stores (`stores`: memory and file; `configmap`), Kubeflow as a
read-only source (`kubeflow`), the manager that keeps the authorizer in step (`manager`) and `lint`."""
