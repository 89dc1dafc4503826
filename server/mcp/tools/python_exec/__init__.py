"""The `python_exec` MCP tool: sandboxed Python, locally with bubblewrap or remotely on SandboxFusion."""

from server.mcp.tools.python_exec.tool import PythonExecTool

__all__ = ["PythonExecTool"]
