"""The warm, sealed sandbox: one namespace tree and one warm interpreter per program, one fork per test.

Host side: prompt_tree.tasks.sandbox.host (WarmSandbox), zygote_host (the zygotes it forks from), processes (private uids,
kills, reads; shared with the per-test sandbox), config (SandboxConfig, the filesystem view), detect (which
isolation works here). Guest side, stdlib only and run in the
zygote or the sandbox: zygote, seal, runner, preamble, wire, wipe. This file imports nothing: the zygote
imports the guest modules by name, and the sandbox must not find anything else loaded.
"""
