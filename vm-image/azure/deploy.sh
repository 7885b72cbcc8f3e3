#!/usr/bin/env bash
# AKS egress through one Tollgate appliance VM (Azure CLI). The steps of Microsoft's "egress with
# a user-defined route" walkthrough, with Tollgate in place of Azure Firewall:
#
#   1. resource group, VNet with an AKS subnet and an appliance subnet
#   2. the image: the fixed VHD from vm-image/build.sh uploaded as a page blob, a managed image
#   3. the appliance: Standard public IP, NSG, NIC with IP forwarding, VM (custom data = config)
#   4. a route table on the AKS subnet: 0.0.0.0/0 -> VirtualAppliance <appliance private IP>, and
#      the host route <appliance public IP>/32 -> Internet (as Microsoft's Azure Firewall
#      walkthrough does for the firewall's public IP: traffic to the appliance's own public
#      address, e.g. DNAT rules used from inside, must not loop through the UDR)
#   5. AKS with --outbound-type userDefinedRouting (kubenet by default; Azure CNI with
#      NETWORK_PLUGIN=azure), a user-assigned identity with Network Contributor on the route table
#      and the subnet (kubenet writes its pod routes into that route table)
#
#   vm-image/azure/deploy.sh            run steps 1-5
#   vm-image/azure/deploy.sh host-route <client-prefix>
#       clients of a public Service of type LoadBalancer: the replies of inbound connections
#       otherwise follow 0.0.0.0/0 to the appliance, which never saw the request (asymmetric
#       routing, dropped as an unknown flow); this routes that prefix straight to Internet.
#       Without such a route, publish Services through a DNAT rule on Tollgate instead.
#   vm-image/azure/deploy.sh print      print the settings, run nothing
#
# Settings (environment, defaults in brackets): RG [tollgate-aks], LOCATION [westeurope],
# VHD [vm-image/out/tollgate-bookworm.vhd], CONFIG [vm-image/azure/tollgate.toml],
# ADMIN_USER [azureuser], SSH_KEY [~/.ssh/id_rsa.pub], ADMIN_CIDR [none: no SSH rule],
# VM_SIZE [Standard_D2s_v5], ACCEL_NET [true], NETWORK_PLUGIN [kubenet], AKS_NAME [tollgate-aks].
# The VNet plan (10.42.0.0/16; AKS 10.42.0.0/22; appliance 10.42.8.0/24 with 10.42.8.4) matches
# tollgate.toml; change both together.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
RG=${RG:-tollgate-aks}
LOCATION=${LOCATION:-westeurope}
VHD=${VHD:-$here/../out/tollgate-bookworm.vhd}
CONFIG=${CONFIG:-$here/tollgate.toml}
ADMIN_USER=${ADMIN_USER:-azureuser}
SSH_KEY=${SSH_KEY:-$HOME/.ssh/id_rsa.pub}
ADMIN_CIDR=${ADMIN_CIDR:-}
VM_SIZE=${VM_SIZE:-Standard_D2s_v5}
NETWORK_PLUGIN=${NETWORK_PLUGIN:-kubenet}
AKS_NAME=${AKS_NAME:-tollgate-aks}

VNET=tollgate-vnet
VNET_PREFIX=10.42.0.0/16
AKS_SUBNET=aks-subnet
AKS_PREFIX=10.42.0.0/22
NVA_SUBNET=appliance-subnet
NVA_PREFIX=10.42.8.0/24
NVA_IP=10.42.8.4
POD_CIDR=10.244.0.0/16
SERVICE_CIDR=10.43.0.0/16
DNS_SERVICE_IP=10.43.0.10
RT=aks-egress-rt
NVA=tollgate-nva
IMAGE=tollgate-bookworm

log() { printf '[deploy %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

host_route() {
  local prefix=$1 name
  case "$prefix" in */*) ;; *) prefix="$prefix/32" ;; esac
  name="internet-${prefix//[.\/]/-}"
  log "route $prefix -> Internet on $RT"
  az network route-table route create -g "$RG" --route-table-name "$RT" \
    --name "$name" --address-prefix "$prefix" --next-hop-type Internet -o none
}

case "${1:-all}" in
  print)
    sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
    echo; echo "RG=$RG LOCATION=$LOCATION VHD=$VHD CONFIG=$CONFIG NETWORK_PLUGIN=$NETWORK_PLUGIN"
    exit 0 ;;
  host-route)
    [ $# -eq 2 ] || { echo "usage: $0 host-route <prefix>" >&2; exit 2; }
    host_route "$2"; exit 0 ;;
  all) ;;
  *) echo "usage: $0 [all|print|host-route <prefix>]" >&2; exit 2 ;;
esac

command -v az >/dev/null || { echo "deploy.sh: the Azure CLI (az) is required" >&2; exit 1; }
[ -f "$VHD" ] || { echo "deploy.sh: $VHD not found: run vm-image/build.sh first" >&2; exit 1; }
[ -f "$CONFIG" ] || { echo "deploy.sh: $CONFIG not found" >&2; exit 1; }
[ -f "$SSH_KEY" ] || { echo "deploy.sh: SSH public key $SSH_KEY not found (set SSH_KEY)" >&2; exit 1; }

# --- 1. resource group and network ---------------------------------------------------------------
log "resource group $RG in $LOCATION"
az group create -n "$RG" -l "$LOCATION" -o none
log "VNet $VNET $VNET_PREFIX: $AKS_SUBNET $AKS_PREFIX, $NVA_SUBNET $NVA_PREFIX"
az network vnet create -g "$RG" -n "$VNET" --address-prefixes "$VNET_PREFIX" \
  --subnet-name "$AKS_SUBNET" --subnet-prefixes "$AKS_PREFIX" -o none
az network vnet subnet create -g "$RG" --vnet-name "$VNET" -n "$NVA_SUBNET" \
  --address-prefixes "$NVA_PREFIX" -o none

# --- 2. the image --------------------------------------------------------------------------------
# Storage account names: 3-24 lowercase letters and digits, globally unique.
SA=${SA:-tg$(az account show --query id -o tsv | tr -d '-' | cut -c1-10)$(printf '%s' "$RG" | md5sum | cut -c1-8)}
log "storage account $SA, VHD upload as a page blob ($(du -h --apparent-size "$VHD" | cut -f1))"
az storage account create -g "$RG" -n "$SA" -l "$LOCATION" --sku Standard_LRS \
  --kind StorageV2 --allow-blob-public-access false -o none
KEY=$(az storage account keys list -g "$RG" -n "$SA" --query '[0].value' -o tsv)
az storage container create --account-name "$SA" --account-key "$KEY" -n vhds -o none
az storage blob upload --account-name "$SA" --account-key "$KEY" -c vhds \
  -n "$IMAGE.vhd" -f "$VHD" --type page --overwrite -o none
BLOB_URL=$(az storage blob url --account-name "$SA" --account-key "$KEY" -c vhds -n "$IMAGE.vhd" -o tsv)
log "managed image $IMAGE (Generation 1: BIOS, extlinux)"
az image create -g "$RG" -n "$IMAGE" --os-type Linux --hyper-v-generation V1 \
  --source "$BLOB_URL" -o none
IMAGE_ID=$(az image show -g "$RG" -n "$IMAGE" --query id -o tsv)

# --- 3. the appliance ----------------------------------------------------------------------------
log "NSG: traffic from the cluster to anywhere (the UDR brings it here), SSH only from ADMIN_CIDR"
az network nsg create -g "$RG" -n "$NVA-nsg" -o none
# AllowVnetInBound does not match: routed packets carry internet destinations, not the NIC's.
az network nsg rule create -g "$RG" --nsg-name "$NVA-nsg" -n allow-from-aks --priority 200 \
  --direction Inbound --access Allow --protocol '*' \
  --source-address-prefixes "$AKS_PREFIX" "$POD_CIDR" --destination-address-prefixes '*' \
  --destination-port-ranges '*' -o none
if [ -n "$ADMIN_CIDR" ]; then
  az network nsg rule create -g "$RG" --nsg-name "$NVA-nsg" -n allow-ssh --priority 300 \
    --direction Inbound --access Allow --protocol Tcp --source-address-prefixes "$ADMIN_CIDR" \
    --destination-address-prefixes '*' --destination-port-ranges 22 -o none
fi
log "Standard public IP and NIC $NVA_IP with IP forwarding"
az network public-ip create -g "$RG" -n "$NVA-pip" --sku Standard --allocation-method Static \
  --version IPv4 -o none
az network nic create -g "$RG" -n "$NVA-nic" --vnet-name "$VNET" --subnet "$NVA_SUBNET" \
  --private-ip-address "$NVA_IP" --public-ip-address "$NVA-pip" \
  --network-security-group "$NVA-nsg" --ip-forwarding true \
  --accelerated-networking "${ACCEL_NET:-true}" -o none
custom_data=$(mktemp)
trap 'rm -f "$custom_data"' EXIT
"$here/render-custom-data.sh" "$CONFIG" > "$custom_data"
log "VM $NVA ($VM_SIZE) from $IMAGE, Tollgate config from $CONFIG as custom data"
az vm create -g "$RG" -n "$NVA" --image "$IMAGE_ID" --size "$VM_SIZE" --nics "$NVA-nic" \
  --admin-username "$ADMIN_USER" --ssh-key-values "$SSH_KEY" --authentication-type ssh \
  --custom-data "$custom_data" --os-disk-size-gb 16 -o none
# Boot diagnostics (managed storage): the serial console (ttyS0) for when SSH is not an option.
az vm boot-diagnostics enable -g "$RG" -n "$NVA" -o none
NVA_PUBLIC=$(az network public-ip show -g "$RG" -n "$NVA-pip" --query ipAddress -o tsv)
log "appliance $NVA_IP, public $NVA_PUBLIC"

# --- 4. route table on the AKS subnet ------------------------------------------------------------
log "route table $RT: 0.0.0.0/0 -> VirtualAppliance $NVA_IP, on $AKS_SUBNET"
az network route-table create -g "$RG" -n "$RT" --disable-bgp-route-propagation true -o none
az network route-table route create -g "$RG" --route-table-name "$RT" -n default-via-tollgate \
  --address-prefix 0.0.0.0/0 --next-hop-type VirtualAppliance --next-hop-ip-address "$NVA_IP" -o none
az network route-table route create -g "$RG" --route-table-name "$RT" -n appliance-public-ip \
  --address-prefix "$NVA_PUBLIC/32" --next-hop-type Internet -o none
az network vnet subnet update -g "$RG" --vnet-name "$VNET" -n "$AKS_SUBNET" --route-table "$RT" -o none

# --- 5. AKS ----------------------------------------------------------------------------------------
# The cluster identity needs Network Contributor on the route table (kubenet writes pod routes
# into it) and on the subnet; a user-assigned identity lets the role exist before the cluster.
log "identity $AKS_NAME-id, Network Contributor on $RT and $AKS_SUBNET"
az identity create -g "$RG" -n "$AKS_NAME-id" -o none
ID_RES=$(az identity show -g "$RG" -n "$AKS_NAME-id" --query id -o tsv)
ID_PRINCIPAL=$(az identity show -g "$RG" -n "$AKS_NAME-id" --query principalId -o tsv)
RT_ID=$(az network route-table show -g "$RG" -n "$RT" --query id -o tsv)
SUBNET_ID=$(az network vnet subnet show -g "$RG" --vnet-name "$VNET" -n "$AKS_SUBNET" --query id -o tsv)
for scope in "$RT_ID" "$SUBNET_ID"; do
  az role assignment create --assignee-object-id "$ID_PRINCIPAL" \
    --assignee-principal-type ServicePrincipal --role "Network Contributor" --scope "$scope" -o none
done

log "AKS $AKS_NAME ($NETWORK_PLUGIN, outbound type userDefinedRouting)"
net_args=(--network-plugin "$NETWORK_PLUGIN" --service-cidr "$SERVICE_CIDR" --dns-service-ip "$DNS_SERVICE_IP")
if [ "$NETWORK_PLUGIN" = kubenet ]; then net_args+=(--pod-cidr "$POD_CIDR"); fi
az aks create -g "$RG" -n "$AKS_NAME" -l "$LOCATION" \
  --vnet-subnet-id "$SUBNET_ID" "${net_args[@]}" \
  --outbound-type userDefinedRouting --load-balancer-sku standard \
  --vm-set-type VirtualMachineScaleSets --node-count 2 \
  --enable-managed-identity --assign-identity "$ID_RES" \
  --generate-ssh-keys -o none

log "done. Next: az aks get-credentials -g $RG -n $AKS_NAME; validate egress (docs/deploy-azure.md)."
log "after the first Service of type LoadBalancer: $0 host-route <its public IP>"
