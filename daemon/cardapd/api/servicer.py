"""The Terminal servicer: one instance per socket role, made of one thin part per
capability; every method goes through the wrapper of `cardapd.api.rpc`."""

from __future__ import annotations

from cardap.v1 import terminal_pb2_grpc
from cardapd.api.rpc import renamed
from cardapd.api.rpc_audit import AuditRpc
from cardapd.api.rpc_loading import LoadingRpc
from cardapd.api.rpc_operators import AccountsRpc, OperatorsRpc, RightsRpc
from cardapd.api.rpc_readers import ReadersRpc
from cardapd.api.rpc_reads import ReadsRpc


class TerminalServicer(ReadersRpc, ReadsRpc, LoadingRpc, OperatorsRpc, AccountsRpc, RightsRpc,
                       AuditRpc, terminal_pb2_grpc.TerminalServicer):
    """cardap.v1.Terminal for one socket role."""

    # The v1.0.0 names deprecated for the one acronym style (`roles.RENAMED`), served until
    # v2 by their successors' code (docs/decisions.md, "The protos as a contract").
    ReadUserID = renamed(ReadsRpc.ReadUserId, "ReadUserID")
    SetUserIDStatus = renamed(ReadsRpc.SetUserIdStatus, "SetUserIDStatus")
    ListLoadableAPs = renamed(LoadingRpc.ListLoadableAps, "ListLoadableAPs")
    LoadAP = renamed(LoadingRpc.LoadAp, "LoadAP")
    DeleteAP = renamed(LoadingRpc.DeleteAp, "DeleteAP")
    ListCardAPs = renamed(LoadingRpc.ListCardAps, "ListCardAPs")
    SetOrganisationAPs = renamed(RightsRpc.SetOrganisationAps, "SetOrganisationAPs")
