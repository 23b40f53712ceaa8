"""The API edge: gRPC servers per socket role, one thin servicer part per capability, the
role table, the one wrapper of every call, and protobuf conversion."""
