from django.core.management.base import BaseCommand, CommandError

from diagnosis.dicom_receiver import ReceiverConfig, receiver_start


class Command(BaseCommand):
    help = ("Run the DICOM receiver (C-STORE SCP with C-ECHO): chest radiographs sent by the PACS become studies, "
            "queued for inference like uploads. Settings CXR_DICOM_*; the options override them. Example:\n"
            "  python manage.py dicom_receiver --ae-title CXR_PORTAL --port 11112 --allow ORTHANC --allow PACS1")

    def add_arguments(self, parser):
        parser.add_argument("--ae-title", default=None, help="this receiver's AE title (CXR_DICOM_AE_TITLE)")
        parser.add_argument("--port", type=int, default=None, help="TCP port (CXR_DICOM_PORT)")
        parser.add_argument("--bind", default=None, help="address to listen on (CXR_DICOM_BIND_ADDRESS)")
        parser.add_argument("--allow", action="append", default=None, metavar="AE_TITLE",
                            help="a calling AE title allowed to send; repeat for several (CXR_DICOM_ALLOWED_CALLING_AES)")

    def handle(self, *args, ae_title, port, bind, allow, **options):
        config = ReceiverConfig.from_settings(ae_title=ae_title, port=port, bind_address=bind, allowed_calling_aes=allow)
        if not config.allowed_calling_aes:
            raise CommandError("No calling AE title is allowed to send: set CXR_DICOM_ALLOWED_CALLING_AES or --allow.")
        self.stdout.write(
            f"DICOM receiver {config.ae_title} on {config.bind_address}:{config.port}"
            f"{' (TLS)' if config.tls_certificate else ''}, accepting from {', '.join(config.allowed_calling_aes)}",
        )
        self.stdout.flush()
        receiver_start(config, block=True)
