// Command podvm-agent is /init of the podvm guest: see package agent.
package main

import "github.com/podvm/podvm/agent"

func main() {
	agent.Main()
}
