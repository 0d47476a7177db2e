// Command etcd is etcd v3.5's server, built from its release module: `go install` refuses
// go.etcd.io/etcd/v3 because of its replace directives, so this module calls its entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
