"""The node agent: one outbound connection to the control plane, the executor that applies
what the plane assigns, the node's identity on disk, and `run_node`, the composition root.

Errors: see `runtime.node.agent.errors` (AgentError and JoinRefused).
"""

from runtime.node.agent.connection import AgentConfig, Executor, backoff_delay, run_agent
from runtime.node.agent.errors import AgentError, JoinRefused
from runtime.node.agent.executor import ExecutorSettings, NodeExecutor
from runtime.node.agent.identity import node_identity, read_credential, save_credential
from runtime.node.agent.serve import NodeSettings, run_node

__all__ = [
    "AgentConfig", "AgentError", "Executor", "ExecutorSettings", "JoinRefused", "NodeExecutor",
    "NodeSettings", "backoff_delay", "node_identity", "read_credential", "run_agent", "run_node",
    "save_credential",
]
