"""Pulumi components for the clusters the plan needs: cloud GPU (EKS), on-prem, and local control planes.
May import infra/ and policies/placement; each component hands workloads/ a `ClusterHandle`."""
