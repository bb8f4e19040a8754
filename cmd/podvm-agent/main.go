// Command podvm-agent is /init of the podvm guest: see package agent. Run
// as agent.PauseName it is a pod's infra process, which pause.c serves
// before the Go runtime starts.
package main

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"github.com/podvm/podvm/agent"
)

// libcontainer starts each container by re-executing this binary as
// `podvm-agent init`; nsenter's constructor has already run by then.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

func main() {
	agent.Main()
}
