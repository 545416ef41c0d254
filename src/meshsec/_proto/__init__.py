"""Generated protobuf/gRPC modules (scripts/gen_proto.py). Do not edit."""

from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf import struct_pb2 as _struct_pb2

POOL = _descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(_struct_pb2.DESCRIPTOR.serialized_pb)
