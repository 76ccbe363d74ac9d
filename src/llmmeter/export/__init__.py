"""Exporters: where finished :class:`~llmmeter.record.CallRecord` objects go (OTel, local store...)."""
