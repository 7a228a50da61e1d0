// govmomi 0.24.2 (Debian's golang-github-vmware-govmomi-dev), unmodified,
// against a running vtwin: log in over SOAP and list datastores.
// VTWIN_URL is http://user:password@host:port/sdk.
package vtwintest

import (
	"context"
	"net/url"
	"os"
	"sort"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func connect(t *testing.T, ctx context.Context, user *url.Userinfo) (*govmomi.Client, error) {
	u, err := soap.ParseURL(os.Getenv("VTWIN_URL"))
	if err != nil {
		t.Fatal(err)
	}
	if user != nil {
		u.User = user
	}
	return govmomi.NewClient(ctx, u, true)
}

func TestLoginAndListDatastores(t *testing.T) {
	ctx := context.Background()
	c, err := connect(t, ctx, nil)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer c.Logout(ctx)

	if c.ServiceContent.About.ApiType != "VirtualCenter" {
		t.Errorf("apiType %q", c.ServiceContent.About.ApiType)
	}
	m := view.NewManager(c.Client)
	v, err := m.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"Datastore"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Destroy(ctx)
	var dss []mo.Datastore
	if err := v.Retrieve(ctx, []string{"Datastore"}, []string{"summary", "name"}, &dss); err != nil {
		t.Fatalf("retrieve: %v", err)
	}
	var names []string
	for _, ds := range dss {
		if ds.Summary.Capacity <= 0 || ds.Summary.FreeSpace <= 0 {
			t.Errorf("%s: capacity %d free %d", ds.Name, ds.Summary.Capacity, ds.Summary.FreeSpace)
		}
		names = append(names, ds.Name)
	}
	sort.Strings(names)
	if len(names) != 2 || names[0] != "LocalDS_0" || names[1] != "LocalDS_1" {
		t.Fatalf("datastores %v", names)
	}

	// The finder walks the inventory with the property collector too.
	f := find.NewFinder(c.Client, true)
	dc, err := f.Datacenter(ctx, "DC0")
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	ds, err := f.Datastore(ctx, "LocalDS_1")
	if err != nil {
		t.Fatal(err)
	}
	var dsmo mo.Datastore
	if err := property.DefaultCollector(c.Client).RetrieveOne(ctx, ds.Reference(), []string{"summary.url"}, &dsmo); err != nil {
		t.Fatal(err)
	}
	if len(dsmo.Summary.Url) < 20 || dsmo.Summary.Url[:19] != "ds:///vmfs/volumes/" {
		t.Errorf("url %q", dsmo.Summary.Url)
	}
}

func TestWrongPasswordIsInvalidLogin(t *testing.T) {
	ctx := context.Background()
	_, err := connect(t, ctx, url.UserPassword("administrator@vsphere.local", "wrong"))
	if err == nil {
		t.Fatal("login succeeded")
	}
	if !soap.IsSoapFault(err) {
		t.Fatalf("not a SOAP fault: %v", err)
	}
	if _, ok := soap.ToSoapFault(err).VimFault().(types.InvalidLogin); !ok {
		t.Fatalf("not InvalidLogin: %#v", soap.ToSoapFault(err).VimFault())
	}
}
