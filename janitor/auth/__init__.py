"""httpx.Auth classes for the providers: token auth now; OCI, SigV4, Huawei and OAuth2 later."""
