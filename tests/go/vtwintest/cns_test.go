package vtwintest

import (
	"context"
	"encoding/xml"
	"net/http"
	"testing"

	"github.com/vmware/govmomi/cns"
	cnstypes "github.com/vmware/govmomi/cns/types"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

// govmomi's cns client, as the vSphere CSI driver uses it: create a volume
// with Kubernetes metadata, attach it to a node VM, find it by label
// (CnsQueryVolume) and by selection (CnsQueryAllVolume), read its
// first-class disk (CnsQueryVolumeInfo), detach, relocate, delete.
func TestCnsVolumeLifecycle(t *testing.T) {
	ctx := context.Background()
	c, err := connect(t, ctx, nil)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer c.Logout(ctx)
	// As the CSI driver does (newer govmomi: Client.UseServiceVersion("vsan")):
	// speak the vSAN service version read from /sdk/vsanServiceVersions.xml,
	// on /sdk too, so the CNS types of task results are in the version.
	u := c.Client.URL()
	resp, err := http.Get(u.Scheme + "://" + u.Host + "/sdk/vsanServiceVersions.xml")
	if err != nil {
		t.Fatal(err)
	}
	var versions struct {
		Namespace []struct {
			Name    string `xml:"name"`
			Version string `xml:"version"`
		} `xml:"namespace"`
	}
	err = xml.NewDecoder(resp.Body).Decode(&versions)
	resp.Body.Close()
	if err != nil || len(versions.Namespace) == 0 || versions.Namespace[0].Name != "urn:vsan" {
		t.Fatalf("vsanServiceVersions.xml: %v %#v", err, versions)
	}
	c.Client.Namespace = versions.Namespace[0].Name
	c.Client.Version = versions.Namespace[0].Version
	cc, err := cns.NewClient(ctx, c.Client)
	if err != nil {
		t.Fatal(err)
	}
	finder := find.NewFinder(c.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	finder.SetDatacenter(dc)
	dss, err := finder.DatastoreList(ctx, "*")
	if err != nil || len(dss) < 2 {
		t.Fatalf("datastores: %v %d", err, len(dss))
	}
	ds1, ds2 := dss[0], dss[1]
	pool, err := finder.DefaultResourcePool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait := func(tk *object.Task, err error) *types.TaskInfo {
		t.Helper()
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		info, err := tk.WaitForResult(ctx, nil)
		if err != nil {
			t.Fatalf("task: %v", err)
		}
		return info
	}
	first := func(info *types.TaskInfo) cnstypes.BaseCnsVolumeOperationResult {
		t.Helper()
		r, err := cns.GetTaskResult(ctx, info)
		if err != nil {
			t.Fatal(err)
		}
		if f := r.GetCnsVolumeOperationResult().Fault; f != nil {
			t.Fatalf("volume fault: %#v", f.Fault)
		}
		return r
	}

	// A node VM with a paravirtual SCSI controller.
	spec := types.VirtualMachineConfigSpec{Name: "go-node", GuestId: "otherGuest64",
		Files: &types.VirtualMachineFileInfo{VmPathName: "[" + ds1.Name() + "]"},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd,
			Device: &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
				SharedBus: types.VirtualSCSISharingNoSharing,
				VirtualController: types.VirtualController{BusNumber: 0, VirtualDevice: types.VirtualDevice{Key: 1000}}}},
		}}}
	info := wait(folders.VmFolder.CreateVM(ctx, spec, pool, nil))
	vm := info.Result.(types.ManagedObjectReference)

	create := cnstypes.CnsVolumeCreateSpec{Name: "pvc-go", VolumeType: "BLOCK",
		Datastores: []types.ManagedObjectReference{ds1.Reference()},
		Metadata: cnstypes.CnsVolumeMetadata{
			ContainerCluster: cnstypes.CnsContainerCluster{ClusterType: "KUBERNETES", ClusterId: "go-cluster", VSphereUser: "administrator@vsphere.local"},
			EntityMetadata: []cnstypes.BaseCnsEntityMetadata{&cnstypes.CnsKubernetesEntityMetadata{
				CnsEntityMetadata: cnstypes.CnsEntityMetadata{EntityName: "pvc-go", Labels: []types.KeyValue{{Key: "team", Value: "go"}}},
				EntityType:        "PERSISTENT_VOLUME_CLAIM", Namespace: "default"}},
		},
		BackingObjectDetails: &cnstypes.CnsBlockBackingDetails{CnsBackingObjectDetails: cnstypes.CnsBackingObjectDetails{CapacityInMb: 32}},
	}
	vol := first(wait(cc.CreateVolume(ctx, []cnstypes.CnsVolumeCreateSpec{create}))).GetCnsVolumeOperationResult().VolumeId

	att := first(wait(cc.AttachVolume(ctx, []cnstypes.CnsVolumeAttachDetachSpec{{VolumeId: vol, Vm: vm}})))
	if uuid := att.(*cnstypes.CnsVolumeAttachResult).DiskUUID; len(uuid) != 36 {
		t.Fatalf("diskUUID %q", uuid)
	}

	res, err := cc.QueryVolume(ctx, cnstypes.CnsQueryFilter{Labels: []types.KeyValue{{Key: "team", Value: "go"}}})
	if err != nil || len(res.Volumes) != 1 || res.Volumes[0].VolumeId != vol || res.Volumes[0].Metadata.ContainerCluster.ClusterId != "go-cluster" {
		t.Fatalf("query by label: %v %#v", err, res)
	}
	all, err := cc.QueryAllVolume(ctx, cnstypes.CnsQueryFilter{ContainerClusterIds: []string{"go-cluster"}},
		cnstypes.CnsQuerySelection{Names: []string{"BACKING_OBJECT_DETAILS", "VOLUME_TYPE"}})
	if err != nil || len(all.Volumes) != 1 || all.Volumes[0].VolumeType != "BLOCK" || all.Volumes[0].Name != "" {
		t.Fatalf("query all: %v %#v", err, all)
	}
	if b, ok := all.Volumes[0].BackingObjectDetails.(*cnstypes.CnsBlockBackingDetails); !ok || b.BackingDiskId != vol.Id || b.CapacityInMb != 32 {
		t.Fatalf("backing %#v", all.Volumes[0].BackingObjectDetails)
	}

	vi := first(wait(cc.QueryVolumeInfo(ctx, []cnstypes.CnsVolumeId{vol})))
	obj := vi.(*cnstypes.CnsQueryVolumeInfoResult).VolumeInfo.(*cnstypes.CnsBlockVolumeInfo).VStorageObject
	if obj.Config.Id.Id != vol.Id || obj.Config.CapacityInMB != 32 {
		t.Fatalf("volume info %#v", obj.Config)
	}

	// Still attached: delete is refused for that volume, in its own result.
	info = wait(cc.DeleteVolume(ctx, []cnstypes.CnsVolumeId{vol}, true))
	r, _ := cns.GetTaskResult(ctx, info)
	if f := r.GetCnsVolumeOperationResult().Fault; f == nil {
		t.Fatal("deleting an attached volume succeeded")
	} else if _, ok := f.Fault.(*types.ResourceInUse); !ok {
		t.Fatalf("fault %#v", f.Fault)
	}

	first(wait(cc.DetachVolume(ctx, []cnstypes.CnsVolumeAttachDetachSpec{{VolumeId: vol, Vm: vm}})))
	first(wait(cc.RelocateVolume(ctx, cnstypes.NewCnsBlockVolumeRelocateSpec(vol.Id, ds2.Reference()))))
	res, err = cc.QueryVolume(ctx, cnstypes.CnsQueryFilter{Datastores: []types.ManagedObjectReference{ds2.Reference()}})
	if err != nil || len(res.Volumes) != 1 || res.Volumes[0].VolumeId != vol {
		t.Fatalf("after relocate: %v %#v", err, res)
	}
	first(wait(cc.DeleteVolume(ctx, []cnstypes.CnsVolumeId{vol}, true)))
	res, err = cc.QueryVolume(ctx, cnstypes.CnsQueryFilter{VolumeIds: []cnstypes.CnsVolumeId{vol}})
	if err != nil || len(res.Volumes) != 0 {
		t.Fatalf("after delete: %v %#v", err, res)
	}
}
