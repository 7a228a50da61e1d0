// The benchmark peer: govmomi 0.24.2's vcsim (Debian's
// golang-github-vmware-govmomi-dev), built offline in GOPATH mode.
// Usage: vcsim-peer [hosts datastores]; prints the SDK URL, then serves.
package main

import (
	"fmt"
	"os"
	"strconv"

	_ "github.com/vmware/govmomi/cns/simulator" // CnsVolumeManager at /vsanHealth
	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := simulator.VPX()
	if len(os.Args) == 3 {
		h, _ := strconv.Atoi(os.Args[1])
		d, _ := strconv.Atoi(os.Args[2])
		model.Host = h
		model.Datastore = d
		model.Cluster = 0
		model.Machine = 0
	}
	defer model.Remove()
	if err := model.Create(); err != nil {
		panic(err)
	}
	model.Service.RegisterEndpoints = true // the CNS endpoint at /vsanHealth
	s := model.Service.NewServer()
	defer s.Close()
	fmt.Println("vcsim listening on", s.URL.String())
	select {}
}
