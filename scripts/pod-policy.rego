# A pod's agent policy, used by the demos and the tests (integration_tests::agent::POD_POLICY):
# everything a pod needs, including the network set-up of a VM, except exec into a
# container (and SetPolicy, which no rule allows).
package agent_policy
default CreateSandboxRequest := true
default DestroySandboxRequest := true
default CreateContainerRequest := true
default StartContainerRequest := true
default RemoveContainerRequest := true
default WaitProcessRequest := true
default ReadStreamRequest := true
default WriteStreamRequest := true
default CloseStdinRequest := true
default SignalProcessRequest := true
default GuestDetailsRequest := true
default UpdateInterfaceRequest := true
default UpdateRoutesRequest := true
default ExecProcessRequest := false
